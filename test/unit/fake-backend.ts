// A RuleBackend of the tests' own: the seam the operations talk to, with what each test needs of it. The rules it
// hands out are real ones (recorded under test/fixtures); what it is not given throws.
import type { RuleBackend } from "../../src/backends/backend.js";
import { formatRule } from "../../src/iptables/text.js";

export function fakeBackend(name: string, parts: Partial<RuleBackend> = {}): RuleBackend {
  const missing = (what: string) => () => {
    throw new Error(`${name}.${what} was not expected`);
  };
  return {
    name,
    kind: "iptables",
    tool: name,
    closedDestination: undefined,
    where: (family, pod) => `${name} IPv${family} place of ${pod.containerId}`,
    describe: (_family, rule) => formatRule(rule),
    readPod: missing("readPod"),
    writePod: missing("writePod"),
    usable: missing("usable"),
    read: missing("read"),
    ...parts,
  };
}
