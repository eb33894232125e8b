// Which backend keeps a live attachment in a pass (the keeper's, reconcile's, gc's): the one holding its rules;
// with its rules nowhere (a flush), the one its portmap writes to — a fact of the pod and of what portmap and our
// ADD did on this node, never kubelet's or kube-proxy's choice of iptables, and never guessed: a pod whose table
// nothing tells is left without rules rather than given them in a table portmap does not read (its DEL would
// never remove them). Pure: rules as read, records and what the operator said in; a backend or a reason out.
import type { LiveAttachment, NodeRules, RuleBackend } from "../backends/backend.js";
import type { IptablesVariant } from "../core/node.js";
import { portmapBackendOf } from "../pipeline/attachment.js";

export type Placement =
  /** `held`: its rules are there (remember it: a flush may take them). */
  | { backend: RuleBackend; held: boolean }
  /** Why it is left without rules (a node with both iptables variants, and nothing says which is portmap's). */
  | { refused: string }
  /** No backend read here can keep it (portmap's nftables backend could not be read): nothing to say. */
  | undefined;

/** What the node says of the variant its CNI plugins run, besides each pod's own rules and record. */
export interface NodeEvidence {
  /** --iptables nft|legacy. */
  stated: IptablesVariant | undefined;
  /** By network, the variants its ADD records name (ADD runs the runtime's iptables, as portmap does). */
  recorded: ReadonlyMap<string, ReadonlySet<IptablesVariant>>;
}

/**
 * Places live attachments on the backends read. `remembered` holds, by record key, the backend that held each
 * pod's rules at an earlier pass of this keeper. On a node with both variants, a pod whose rules are gone goes
 * where this keeper last saw them, else where its ADD ran, else to the stated variant, else to the one variant
 * its network's other ADDs ran, or the node's, holding portmap's chains, or whose nat table exists at all.
 */
export function placer(
  read: readonly NodeRules[],
  node: NodeEvidence,
  remembered: ReadonlyMap<string, string>,
): (live: Omit<LiveAttachment, "label">) => Placement {
  const iptables = read.filter((r) => r.backend.kind === "iptables");
  const only = (rules: readonly NodeRules[]) => (rules.length === 1 ? rules[0]?.backend.variant : undefined);
  const wrote = iptables.filter((r) => r.portmapWrote);
  const one = (variants: ReadonlySet<IptablesVariant> | undefined) =>
    variants?.size === 1 ? [...variants][0] : undefined;
  const recorded = new Set([...node.recorded.values()].flatMap((v) => [...v]));
  const nodeVariant = one(recorded) ?? only(wrote) ?? only(iptables.filter((r) => r.tablesExist));
  /** Of several iptables backends, the one the pod's portmap uses; undefined when nothing says. */
  const choose = (candidates: readonly NodeRules[], l: Omit<LiveAttachment, "label">): NodeRules | undefined => {
    if (candidates.length <= 1) return candidates[0];
    const named = remembered.get(l.key);
    const of = (v: IptablesVariant | undefined) =>
      v === undefined ? undefined : candidates.find((c) => c.backend.variant === v);
    return (
      candidates.find((c) => c.backend.name === named) ??
      of(l.record?.iptables) ??
      of(node.stated) ??
      of(one(node.recorded.get(l.attachment.network))) ??
      of(nodeVariant)
    );
  };
  return (l) => {
    const pod = { network: l.attachment.network, containerId: l.attachment.containerId };
    const holders = read.filter((r) => r.holds(pod));
    if (holders.length > 0) {
      // Rules in both variants (a node switching iptables): keep the copy portmap uses, as far as anything says.
      const iptablesHolders = holders.filter((h) => h.backend.kind === "iptables");
      const holder = choose(iptablesHolders, l) ?? iptablesHolders[0] ?? holders[0];
      return holder && { backend: holder.backend, held: true };
    }
    if (portmapBackendOf(l.attachment) === "nftables") {
      const nft = read.find((r) => r.backend.kind === "nftables");
      return nft && { backend: nft.backend, held: false };
    }
    const chosen = choose(iptables, l);
    if (chosen) return { backend: chosen.backend, held: false };
    if (iptables.length === 0) return undefined;
    const names = (rules: readonly NodeRules[], and: string) => rules.map((r) => r.backend.name).join(and);
    const said = recorded.size > 1 ? "the node's ADDs ran both" : "no ADD here recorded its iptables";
    const chains =
      wrote.length === 0
        ? `neither ${names(iptables, " nor ")} holds portmap's chains`
        : `${names(wrote, " and ")} both hold portmap's chains`;
    return {
      refused: `its hostPort rules are in no nat table, and nothing tells which iptables its portmap runs (${said}, ${chains}, both nat tables exist): left without rules until --iptables legacy or --iptables nft says which`,
    };
  };
}
