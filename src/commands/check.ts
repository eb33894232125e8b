// CHECK: the pod's rules must be scoped exactly as the policy resolves them now.
import type { NetConf } from "../core/config.js";
import { type CniEnv, podLabel } from "../core/names.js";
import { CniError, Code } from "../core/errors.js";
import { formatRule } from "../iptables/text.js";
import { changed, planPodChains } from "./plan.js";

export async function cmdCheck(conf: NetConf, env: CniEnv): Promise<void> {
  if (!conf.prevResult) throw new CniError(Code.InvalidConfig, "no prevResult: CHECK needs the attachment's result");
  const wrong = (await planPodChains(conf, env)).find(changed);
  if (wrong) {
    throw new CniError(
      Code.RulesNotScoped,
      `hostPort rules of pod ${podLabel(env)} in chain ${wrong.chain} (IPv${wrong.family}) are not scoped as the policy requires`,
      `expected:\n${wrong.desired.map((r) => formatRule(r)).join("\n")}\nfound:\n${wrong.current.map((r) => formatRule(r)).join("\n")}`,
    );
  }
}
