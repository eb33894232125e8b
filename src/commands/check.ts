// CHECK: the pod's rules must be scoped exactly as the policy resolves them now.
import type { NetConf } from "../cni/config.js";
import { type CniEnv, podLabel } from "../cni/env.js";
import { CniError, Code } from "../cni/errors.js";
import { CHAIN, NFT_FAMILY, TABLE, applyRewrites, describeRule, podRules } from "../nftables/rules.js";
import { type FamilyPlan, changed, planPodChains } from "./plan.js";

/** Where the plan's rules are, and its expected and found rules, as text. */
function describePlan(plan: FamilyPlan, containerId: string): { where: string; expected: string[]; found: string[] } {
  if (plan.backend === "iptables") return { where: `chain ${plan.chain}`, expected: plan.desired, found: plan.current };
  const found = podRules(plan.rules, containerId);
  return {
    where: `nftables chain ${NFT_FAMILY[plan.family]} ${TABLE} ${CHAIN}`,
    expected: applyRewrites(found, plan.rewrites).map(describeRule),
    found: found.map((r) => describeRule(r.expr)),
  };
}

export async function cmdCheck(conf: NetConf, env: CniEnv): Promise<void> {
  if (!conf.prevResult) throw new CniError(Code.InvalidConfig, "no prevResult: CHECK needs the attachment's result");
  const wrong = (await planPodChains(conf, env)).find(changed);
  if (wrong) {
    const { where, expected, found } = describePlan(wrong, env.containerId);
    throw new CniError(
      Code.RulesNotScoped,
      `hostPort rules of pod ${podLabel(env)} in ${where} (IPv${wrong.family}) are not scoped as the policy requires`,
      `expected:\n${expected.join("\n")}\nfound:\n${found.join("\n")}`,
    );
  }
}
