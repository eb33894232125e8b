// Any interleaving, against a model: a seeded list of random steps (pod ADD/DEL on four networks in three tables:
// iptables-nft, iptables-legacy as on a mixed node, portmap's nftables; CHECK, quiescent points, nat and nftables
// flushes, old tables restored, reconcile, gc, conflist rewrites, node addresses, the keeper killed and started)
// run on a real node, its tables read after every step and real packets sent at the quiescent points
// (test/support/model). A failure prints its seed, the steps and a shrunk list, and how to replay each
// (PMH_MODEL_SEED, PMH_MODEL_STEPS, PMH_MODEL_KEEP).
import { expect, it } from "vitest";
import { describeAsRoot } from "../support/e2e.js";
import { InvokerRuntime } from "../support/model/invoker.js";
import { modelSettings, modelSteps, runModel } from "../support/model/run.js";
import type { StepWeights } from "../support/model/steps.js";

/** The short run of `npm test`; scripts/model-long runs several seeds with more steps. */
const SHORT_RUN_STEPS = 200;

const WEIGHTS: StepWeights = {
  add: 8,
  del: 5,
  check: 2,
  quiesce: 3,
  "flush-nat": 1,
  "flush-nft": 1,
  save: 1,
  "restore-nat": 1,
  "restore-nft": 1,
  reconcile: 1,
  gc: 1,
  "rewrite-conflist": 1,
  address: 1,
  "keeper-kill": 1,
  "keeper-start": 1,
  pause: 1,
};

describeAsRoot("model: random interleavings on a real node (libcni-like runtime)", () => {
  it("keeps every invariant after every step", { timeout: 3_600_000 }, async () => {
    const result = await runModel({
      file: "test/e2e/model.test.ts",
      ...modelSettings({ steps: SHORT_RUN_STEPS, weights: WEIGHTS }),
      runtime: async (node) => new InvokerRuntime(node),
      log: (line) => console.log(line),
    });
    expect(result.ok, result.report).toBe(true);
  });
});

it("draws the same steps for a seed whatever the step count: a failing run's prefix replays alone", () => {
  expect(modelSteps(7, 30, WEIGHTS)).toEqual(modelSteps(7, 90, WEIGHTS).slice(0, 30));
  expect(modelSteps(7, 30, WEIGHTS)).not.toEqual(modelSteps(8, 30, WEIGHTS));
});
