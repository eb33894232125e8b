// CHECK: the pod's rules must be scoped exactly as the policy resolves them now.
import type { NetConf } from "../core/config.js";
import { CniError, Code } from "../core/errors.js";
import { type CniEnv, podLabel } from "../core/names.js";
import type { Rule } from "../core/rule.js";
import { formatRule } from "../iptables/text.js";
import { describeRule } from "../nftables/json.js";
import { type ChainPlan, changed, planPodChains } from "../pipeline/plan.js";

export async function cmdCheck(conf: NetConf, env: CniEnv): Promise<void> {
  if (!conf.prevResult) throw new CniError(Code.InvalidConfig, "no prevResult: CHECK needs the attachment's result");
  const wrong = (await planPodChains(conf, env)).plans.find(changed);
  if (wrong) {
    const text = (plan: ChainPlan, rules: Rule[]) =>
      rules.map((r) => (plan.backend === "iptables" ? formatRule(r) : describeRule(plan.family, r))).join("\n");
    throw new CniError(
      Code.RulesNotScoped,
      `hostPort rules of pod ${podLabel(env)} in ${wrong.backend === "iptables" ? "chain " : ""}${wrong.chain} (IPv${wrong.family}) are not scoped as the policy requires`,
      `expected:\n${text(wrong, wrong.desired)}\nfound:\n${text(wrong, wrong.current)}`,
    );
  }
}
