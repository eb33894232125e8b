// A keeper pass as its observers (metrics, Events) see it, for their tests: nothing happened unless `over` says.
import type { ObservedPass } from "../../../src/cli/keeper.js";

export const observedPass = (over: Partial<ObservedPass>): ObservedPass => ({
  trigger: "resync",
  seconds: 0.01,
  report: undefined,
  repairs: [],
  failures: [],
  refused: [],
  rows: undefined,
  closed: [],
  ok: true,
  ...over,
});
