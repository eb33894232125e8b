// CHECK: the pod's rules must be scoped exactly as the policy resolves them now.
import { podBackends } from "../backends/registry.js";
import { planPodChains } from "../backends/scope-pod.js";
import type { NetConf } from "../core/config.js";
import { CniError, Code } from "../core/errors.js";
import { type CniEnv, podLabel } from "../core/names.js";
import type { Rule } from "../core/rule.js";
import { changed } from "../pipeline/plan.js";

export async function cmdCheck(conf: NetConf, env: CniEnv): Promise<void> {
  if (!conf.prevResult) throw new CniError(Code.InvalidConfig, "no prevResult: CHECK needs the attachment's result");
  const wrong = (await planPodChains(conf, env, podBackends)).plans.find(changed);
  if (wrong) {
    const { backend, family, pod } = wrong;
    const text = (rules: readonly Rule[]) => rules.map((r) => backend.describe(family, r)).join("\n");
    throw new CniError(
      Code.RulesNotScoped,
      `hostPort rules of pod ${podLabel(env)} in ${backend.where(family, pod)} (IPv${family}) are not scoped as the policy requires`,
      `expected:\n${text(wrong.desired)}\nfound:\n${text(wrong.current)}`,
    );
  }
}
