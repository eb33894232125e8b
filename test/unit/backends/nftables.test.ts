// portmap's nftables backend on one pod, through a stand-in `nft` that prints what portmap v1.9.1's tables listed
// (test/fixtures/nftables): the pod's rules read by container ID, and both families written in one batch.
import { describe, expect, it } from "vitest";
import type { ChainPlan, PodRef } from "../../../src/backends/backend.js";
import { nftablesBackend } from "../../../src/backends/nftables.js";
import { Code, RulesChanged } from "../../../src/core/errors.js";
import { runBlocking } from "../../../src/host/run.js";
import { batch, NEVER, parseChainJson, podRules, rewriteCommands } from "../../../src/nftables/json.js";
import { fixture } from "../fixtures.js";
import { type Answer, type Tools, useToolsOnPath } from "../tools.js";

const POD: PodRef = { network: "cbr0", containerId: "abc123" };
const chain = (name: string) => parseChainJson(fixture(`nftables/${name}.json`));
/** `nft -a -j list chain <family> cni_hostport hostports` as recorded in `<name>-v4.json` and `<name>-v6.json`. */
const listings = (name: string): Answer[] => [
  { when: "ip6 cni_hostport hostports", stdout: fixture(`nftables/${name}-v6.json`) },
  { when: "ip cni_hostport hostports", stdout: fixture(`nftables/${name}-v4.json`) },
];

const onPath = useToolsOnPath();
const withNft = (answers: readonly Answer[] | undefined): Tools => onPath(answers ? { nft: answers } : {});

describe("the nftables backend", () => {
  const backend = nftablesBackend;

  it("names portmap's chain per family, prints rules as nft does, and keeps closed mappings' rules matching nothing", () => {
    expect([backend.where(4, POD), backend.where(6, POD)]).toEqual([
      "nftables chain ip cni_hostport hostports",
      "nftables chain ip6 cni_hostport hostports",
    ]);
    expect(backend.describe(4, chain("unscoped-v4")[0]!)).toBe('tcp dport 8080 dnat to 10.244.1.5:80 comment "abc123"');
    expect(backend.closedDestination).toBe(NEVER);
  });

  it("reads the pod's rules of each family by its container ID, with `nft -a -j list chain`", async () => {
    const t = withNft(listings("repeated"));
    expect(await backend.readPod(POD, [4, 6], runBlocking)).toEqual([
      podRules(chain("repeated-v4"), "abc123"),
      podRules(chain("repeated-v6"), "abc123"),
    ]);
    expect(t.calls().map((c) => c.args)).toEqual([
      ["-a", "-j", "list", "chain", "ip", "cni_hostport", "hostports"],
      ["-a", "-j", "list", "chain", "ip6", "cni_hostport", "hostports"],
    ]);
    const other = await backend.readPod({ ...POD, containerId: "def456" }, [4], runBlocking);
    expect(other).toEqual([podRules(chain("repeated-v4"), "def456")]);
    expect(other[0]).toHaveLength(1);
  });

  it("holds no rules of a container none of whose rules are there, of a table portmap never created, or without nft", async () => {
    withNft(listings("reference"));
    expect(await backend.readPod({ ...POD, containerId: "def456" }, [4, 6], runBlocking)).toEqual([
      undefined,
      undefined,
    ]);
    withNft([{ stderr: fixture("nftables/no-table.stderr"), code: 1 }]);
    expect(await backend.readPod(POD, [4, 6], runBlocking)).toEqual([undefined, undefined]);
    withNft(undefined);
    expect(await backend.readPod(POD, [4], runBlocking)).toEqual([undefined]);
  });

  describe("writing the pod's rules", () => {
    const plan = (family: 4 | 6, current: string, desired: string): ChainPlan => ({
      backend,
      pod: POD,
      family,
      current: podRules(chain(current), "abc123"),
      desired: chain(desired),
      closed: [],
    });
    const plans = [plan(4, "unscoped-v4", "scoped-192.0.2.11-v4"), plan(6, "unscoped-v6", "scoped-2001.db8..10-v6")];

    it("writes both families in one nft batch, as its argument", async () => {
      const t = withNft([{}]);
      await backend.writePod(plans, runBlocking);
      const expected = batch(plans.flatMap((p) => rewriteCommands(p.family, p.current, p.desired)));
      expect(t.calls()).toEqual([{ tool: "nft", args: ["-j", expected], stdin: "" }]);
      const doc = JSON.parse(expected) as { nftables: Array<Record<string, { rule: Record<string, unknown> }>> };
      expect(doc.nftables.map((c) => [Object.keys(c)[0], Object.values(c)[0]!.rule["family"]])).toEqual([
        ["insert", "ip"],
        ["delete", "ip"],
        ["insert", "ip6"],
        ["delete", "ip6"],
      ]);
    });

    it("says the rules changed (read again, try again: code 11) when a rule to replace is gone", async () => {
      withNft([{ stderr: fixture("nftables/gone-handle.stderr"), code: 1 }]);
      const err = await backend.writePod(plans, runBlocking).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RulesChanged);
      expect(err).toMatchObject({
        code: Code.TryAgainLater,
        details: fixture("nftables/gone-handle.stderr").trim(),
      });
    });
  });
});
