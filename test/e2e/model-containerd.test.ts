// The model test (model.test.ts) with a real containerd starting the pods through CRI, as kubelet does, on the
// managed network: containerd restarted while pods run, the keeper killed and started, the conflist rewritten
// under it, nat flushes, old tables, reconcile, gc, node addresses. Short: containerd's sandboxes are slow.
import { expect, it } from "vitest";
import { describeAsRoot } from "../support/e2e.js";
import { CONTAINERD_NETWORKS, ContainerdRuntime } from "../support/model/containerd.js";
import { modelSettings, runModel } from "../support/model/run.js";
import type { StepWeights } from "../support/model/steps.js";

/** The short run of `npm test`; scripts/model-long runs more. */
const SHORT_RUN_STEPS = 40;

const WEIGHTS: StepWeights = {
  add: 6,
  del: 4,
  quiesce: 3,
  "containerd-restart": 2,
  "flush-nat": 1,
  save: 1,
  "restore-nat": 1,
  reconcile: 1,
  gc: 1,
  "rewrite-conflist": 1,
  address: 1,
  "keeper-kill": 1,
  "keeper-start": 1,
  pause: 1,
};

describeAsRoot("model: random interleavings on a real node (containerd through CRI)", () => {
  it("keeps every invariant after every step", { timeout: 3_600_000 }, async () => {
    const result = await runModel({
      file: "test/e2e/model-containerd.test.ts",
      ...modelSettings({ steps: SHORT_RUN_STEPS, weights: WEIGHTS }),
      networks: CONTAINERD_NETWORKS,
      runtime: (node) => ContainerdRuntime.start(node),
      log: (line) => console.log(line),
    });
    expect(result.ok, result.report).toBe(true);
  });
});
