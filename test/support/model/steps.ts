// The model test's steps: plain data drawn from a seed (fast-check's generator), so that a seed and a step count
// give the same list again. A step names what it does abstractly ("delete a live pod, pick 7"): which pod,
// which port is resolved against the model when the step runs, so that any sub-list of steps still runs
// (what shrinking needs).
import fc from "fast-check";
import type { Family, Proto, Variant } from "./policy.js";

export type Step =
  | {
      kind: "add";
      /** Network index (NETWORKS). */
      net: number;
      protos: Proto[];
      /** What the pod asks for: 0–4 the network's default, then annotations, a runtime hostIP, a refusal. */
      ask: number;
      pick: number;
    }
  | { kind: "del"; pick: number }
  | { kind: "check"; pick: number }
  | { kind: "quiesce"; pick: number }
  | { kind: "flush-nat"; variant: Variant }
  | { kind: "flush-nft"; family: Family; how: "table" | "chain" }
  | { kind: "save" }
  | { kind: "restore-nat"; variant: Variant }
  | { kind: "restore-nft"; family: Family }
  | { kind: "reconcile" }
  | { kind: "gc"; grace: 0 | 1 }
  | { kind: "rewrite-conflist" }
  | { kind: "address"; family: Family }
  | { kind: "keeper-kill" }
  | { kind: "keeper-start" }
  | { kind: "pause"; ms: number }
  | { kind: "containerd-restart" };

export type StepKind = Step["kind"];

const pick = fc.nat(1_000_000);
const family = fc.constantFrom<Family>(4, 6);
const variant = fc.constantFrom<Variant>("nft", "legacy");

const ARBITRARIES: Record<StepKind, fc.Arbitrary<Step>> = {
  add: fc.record({
    kind: fc.constant("add" as const),
    net: fc.nat(99),
    protos: fc.constantFrom<Proto[]>(["tcp"], ["udp"], ["tcp", "udp"], ["tcp", "tcp"]),
    ask: fc.nat(9),
    pick,
  }),
  del: fc.record({ kind: fc.constant("del" as const), pick }),
  check: fc.record({ kind: fc.constant("check" as const), pick }),
  quiesce: fc.record({ kind: fc.constant("quiesce" as const), pick }),
  "flush-nat": fc.record({ kind: fc.constant("flush-nat" as const), variant }),
  "flush-nft": fc.record({
    kind: fc.constant("flush-nft" as const),
    family,
    how: fc.constantFrom<"table" | "chain">("table", "chain"),
  }),
  save: fc.constant({ kind: "save" as const }),
  "restore-nat": fc.record({ kind: fc.constant("restore-nat" as const), variant }),
  "restore-nft": fc.record({ kind: fc.constant("restore-nft" as const), family }),
  reconcile: fc.constant({ kind: "reconcile" as const }),
  gc: fc.record({ kind: fc.constant("gc" as const), grace: fc.constantFrom<0 | 1>(0, 1) }),
  "rewrite-conflist": fc.constant({ kind: "rewrite-conflist" as const }),
  address: fc.record({ kind: fc.constant("address" as const), family }),
  "keeper-kill": fc.constant({ kind: "keeper-kill" as const }),
  "keeper-start": fc.constant({ kind: "keeper-start" as const }),
  pause: fc.record({ kind: fc.constant("pause" as const), ms: fc.integer({ min: 300, max: 2500 }) }),
  "containerd-restart": fc.constant({ kind: "containerd-restart" as const }),
};

/** How often each step is drawn (relative weights); a step kind left out is never drawn. */
export type StepWeights = Partial<Record<StepKind, number>>;

/** One step drawn from `seed`: the same step for the same seed and weights. */
export function drawStep(seed: number, weights: StepWeights): Step {
  const arbs = Object.entries(weights)
    .filter(([, w]) => (w ?? 0) > 0)
    .map(([kind, weight]) => ({ arbitrary: ARBITRARIES[kind as StepKind], weight: weight as number }));
  return fc.sample(fc.oneof(...arbs), { seed, numRuns: 1 })[0] as Step;
}

/** A step as one short line, e.g. `add net=1 tcp,udp ask=5 pick=1234`. */
export function stepText(s: Step): string {
  return Object.entries(s)
    .map(([k, v]) => (k === "kind" ? String(v) : `${k}=${Array.isArray(v) ? v.join(",") : String(v)}`))
    .join(" ");
}

/** A small deterministic generator for choices inside a step (which pods a quiescent point probes). */
export function chooser(seed: number): (n: number) => number {
  let state = seed >>> 0 || 1;
  return (n) => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) % Math.max(1, n);
  };
}
