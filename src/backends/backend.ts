// The seam between the operations and the places portmap writes. A backend is one such place — the nat table of
// an iptables variant, or portmap's nftables tables — and the only code that knows its rule text. ADD and CHECK
// read and write one pod's rules through it; status, gc, reconcile and the keeper read a backend whole
// (NodeRules) and act on what they read. The operations never ask which backend they talk to.

import type { PortMapping, PrevResult } from "../core/config.js";
import type { Family } from "../core/ip.js";
import type { IptablesVariant, NodeNetwork } from "../core/node.js";
import type { Rule } from "../core/rule.js";
import type { CachedAttachment, CacheRead } from "../host/cache.js";
import type { Liveness } from "../host/liveness.js";
import type { ContainerRecord } from "../host/record.js";
import type { Runner } from "../host/run.js";
import type { FamilyScope } from "../policy/resolve.js";

/** portmap's names for its backends (its `backend` option). */
export type BackendKind = "iptables" | "nftables";

/** A pod's attachment as the rules know it: portmap's iptables chain is named after both. */
export interface PodRef {
  network: string;
  containerId: string;
}

/** One family's rules of a pod: as read, and as they must be. */
export interface ChainPlan {
  backend: RuleBackend;
  pod: PodRef;
  family: Family;
  /** The pod's rules as read (iptables: its whole chain; nftables: its rules, with their handles). */
  current: Rule[];
  desired: Rule[];
  /** Mappings left with no host IP in this family (RuleBackend.closedDestination says what becomes of them). */
  closed: FamilyScope[];
}

export interface RuleBackend {
  /** How reports name it: "iptables" (the binaries on PATH), "iptables-legacy", "iptables-nft", "nftables". */
  readonly name: string;
  readonly kind: BackendKind;
  /** iptables: the variant its binaries are, when they are named by it (undefined: the binaries on PATH). */
  readonly variant?: IptablesVariant;
  /** The program it runs, as messages name it: "iptables" (or "iptables-legacy", …), "nft". */
  readonly tool: string;
  /**
   * A destination no packet has, for a mapping left with no host IP in a family whose rules must stay (portmap's
   * nftables CHECK counts them); undefined: such a mapping's rules go.
   */
  readonly closedDestination: Readonly<Record<Family, string>> | undefined;

  /** Where a pod's rules of a family are, as messages name it. */
  where(family: Family, pod: PodRef): string;
  /** A rule as this backend prints it, for messages. */
  describe(family: Family, rule: Rule): string;
  /** The pod's rules per family; undefined for a family where this backend holds none of them. */
  readPod(pod: PodRef, families: readonly Family[], runner: Runner): Promise<Array<Rule[] | undefined>>;
  /**
   * Writes the plans (of one pod, this backend's) so the rules are `desired`: all or nothing. Throws RulesChanged
   * when a rule it was to replace is gone (a concurrent DEL or ADD of the pod): read again and retry.
   */
  writePod(plans: readonly ChainPlan[], runner: Runner): Promise<void>;
  /** A container's first ADD, where the backend can take portmap's rules without reading them (iptables). */
  readonly unread?: UnreadSwap;
  /** STATUS: the backend's tool answers and takes a transaction. Throws NotInstalled when the tool is missing. */
  usable(): Promise<void>;
  /** Everything this backend holds on the node. Throws when it cannot read at all. */
  read(): Promise<NodeRules>;
}

/** portmap's rules of a container's first ADD, known without reading them, and their swap for others. */
export interface UnreadSwap {
  /** Per family, the rules portmap writes with its default options; undefined: the pod has no address there. */
  portmapRules(
    pod: PodRef,
    prevResult: PrevResult | undefined,
    ifname: string,
    mappings: readonly PortMapping[],
    families: readonly Family[],
  ): Array<Rule[] | undefined>;
  /** Deletes `from`, appends `to`, in one transaction; false when it refused (a rule of `from` is not there). */
  swap(family: Family, from: readonly Rule[], to: readonly Rule[], runner: Runner): Promise<boolean>;
}

/** One pod's rules in one family as a backend holds them on the node. */
export interface HeldPod {
  family: Family;
  /** The backend's key for the pod (NodeRules.keyOf). */
  key: string;
  /** Where they are, as status shows it. */
  place: string;
  /** Whose they are, as far as the rules say (nftables rules name no network). */
  owner: { network: string | null; containerId: string } | undefined;
  rules: Rule[];
  /** False when nothing leads traffic to them (an iptables chain no jump reaches). */
  reachable: boolean;
  /** The order in which the node's rules see packets: of two pods claiming an address, the lower rank wins. */
  rank(index: number): readonly [number, number];
}

/** A dead pod's rules that went (or would go). */
export interface Removed {
  containerId: string;
  /** iptables: the pod's chain, its network and how many jumps to it went. */
  chain?: { name: string; network: string; jumps: number };
  /** nftables: how many rules went (both families, every chain). */
  rules?: number;
}

/** A live pod whose rules a pass wrote: its attachment, and where its rules are (a chain, nftables' table and chain). */
export interface Repaired {
  attachment: CachedAttachment;
  place: string;
}

/** What a backend's collect did per family (`family` undefined: both at once). */
export interface Collected {
  family: Family | undefined;
  removed: Removed[];
  /** Dead pods' rules left alone, and why. */
  leftAlone: string[];
}

/** One backend's rules on the node, as read once. */
export interface NodeRules {
  readonly backend: RuleBackend;
  /** The families read (a family whose tool failed is left out, and said in `problems`). */
  readonly families: readonly Family[];
  readonly problems: readonly string[];
  /** What was read, as text: two reads with the same text hold the same rules (the keeper's status rows). */
  readonly text: string;
  /** Whether portmap has written here: its chains (iptables: CNI-HOSTPORT-DNAT, a pod's) or its tables exist. */
  readonly portmapWrote: boolean;
  /**
   * Whether its tables exist at all: iptables-legacy's nat table appears only once something writes to it (and
   * never goes), so a node without one has never had portmap write there. Others: as far as can be told, yes.
   */
  readonly tablesExist: boolean;
  /** The key by which this backend knows a pod's rules (HeldPod.key). */
  keyOf(pod: PodRef): string;
  /** Each pod's rules per family. */
  pods(): HeldPod[];
  /** Whether it holds rules of this attachment. */
  holds(pod: PodRef): boolean;
  /** Deletes the rules of the pods `dead` names (CNI GC), one transaction per family, read again once on a race. */
  collect(dead: Liveness, dryRun: boolean): Promise<Collected[]>;
  /** One keeper pass over this backend: the live pods' rules as they must be, dead pods' gone when they may. */
  keep(pass: BackendPass): Promise<BackendOutcome>;
}

/** What one pass knows of the node. */
export interface NodeView {
  cache: CacheRead;
  records: ReadonlyMap<string, ContainerRecord>;
  network: NodeNetwork;
  now: number;
}

/** A live attachment and its record. */
export interface LiveAttachment {
  /** Its record key (host/record.ts). */
  key: string;
  label: string;
  attachment: CachedAttachment;
  record: ContainerRecord | undefined;
}

export interface PassOptions {
  dryRun: boolean;
  /** Whether live pods' missing or wrong rules are written (gc: no). */
  rebuild: boolean;
  /** Only these networks' attachments and chains (none: every network). */
  networks: readonly string[];
  /**
   * Which networks the pass keeps (rebuilds, and deletes dead pods' chains of): "ours", those whose cached conflist
   * has our entry and the managed conflist's (the keeper, reconcile); "cached", every network the cache names (gc).
   */
  scope: "ours" | "cached";
  /** The conflist the installer manages (the keeper, reconcile); undefined when none is known. */
  managed: ManagedList | undefined;
  /** A dead pod's rules that take no live pod's port go after this long dead (Infinity: never). */
  graceMs: number;
  /** A dead pod's rules that take a live pod's port go at once when its DEL is recorded, else after a second look. */
  conflictsFirst: boolean;
  /** The node's CNI plugins: the nftables backend runs portmap's ADD again from here. */
  cniBinDir: string;
  /**
   * The variant of iptables the node's CNI plugins run, as the operator states it (--iptables): where pods go
   * whose rules are in no nat table and whose ADD recorded none. Undefined: learned from the node (placement.ts).
   */
  cniIptables: IptablesVariant | undefined;
}

/** The conflist the installer manages: its network, and our entry in it (undefined: it has none now). */
export interface ManagedList {
  network: string;
  entry: Record<string, unknown> | undefined;
}

/**
 * Our entry for an attachment whose cached conflist has none: the managed conflist's, for that network's pods only
 * (they started while a rewrite of that file had removed our entry).
 */
export const fallbackEntry = (
  managed: ManagedList | undefined,
  a: CachedAttachment,
): Record<string, unknown> | undefined => (a.network === managed?.network ? managed.entry : undefined);

/**
 * What a pass found all correct: a later pass that reads the same `text`, decides by the same `key` and gets
 * the same `inputs` (by identity: the keeper keeps parsed attachments and their expected rules) has nothing to do.
 */
export interface Settled {
  text: string;
  key: string;
  inputs: readonly object[];
  correct: number;
}

export interface BackendPass {
  view: NodeView;
  /** The live attachments whose rules are this backend's. */
  live: LiveAttachment[];
  verdict: Liveness;
  /**
   * Whether the pass may rebuild this attachment's rules now (false: wait for confirmation). `alone`: its rules
   * are gone where portmap's others remain, as a DEL leaves them (a flush takes portmap's too).
   */
  mayRebuild(key: string, alone: boolean): boolean;
  /**
   * Called for every dead pod's rules seen; whether they go now. `conflicting`: they take a live pod's port;
   * `deleted`: its DEL is recorded (no doubt it is dead).
   */
  collectNow(family: Family, place: string, conflicting: boolean, deleted: boolean): boolean;
  /** Networks whose dead pods' rules may go: those given, else every network the cache names. */
  gcNetworks: ReadonlySet<string>;
  /** Per backend and family, what earlier passes found settled. */
  settled: Map<string, Settled>;
  options: PassOptions;
}

/** One family's part of a pass, for the report (`family` undefined: both at once, as nftables works per pod). */
export interface FamilyOutcome {
  backend: string;
  family: Family | undefined;
  removed: Removed[];
  leftAlone: string[];
  /** One line per other change (written, or planned under dryRun). */
  actions: string[];
  /** The live pods whose rules it wrote (or would write), for the keeper's repair counts, log and Events. */
  repaired: Repaired[];
  correct: number;
  rebuilt: number;
  /** Lines of the one transaction (0: nothing written). */
  lines: number;
  /** The transaction itself, for --dry-run. */
  payload: string;
  skipped: string[];
  waiting: string[];
  failure: string | undefined;
  droppedUdp: number;
}

export interface BackendOutcome {
  families: FamilyOutcome[];
  problems: string[];
}

/** A family's outcome before anything happened. */
export const emptyOutcome = (backend: string, family: Family | undefined): FamilyOutcome => ({
  backend,
  family,
  removed: [],
  leftAlone: [],
  actions: [],
  repaired: [],
  correct: 0,
  rebuilt: 0,
  lines: 0,
  payload: "",
  skipped: [],
  waiting: [],
  failure: undefined,
  droppedUdp: 0,
});

/** An error's message, and the tool's own words (CniError details) on the next line. */
export const failureText = (err: unknown): string => {
  const details = (err as { details?: string }).details;
  return `${(err as Error).message}${details ? `\n${details}` : ""}`;
};

/** The same items in the same order, by identity (what a pass keeps from the last one is the same object). */
export const sameItems = (a: readonly unknown[], b: readonly unknown[]): boolean =>
  a.length === b.length && a.every((x, i) => x === b[i]);
