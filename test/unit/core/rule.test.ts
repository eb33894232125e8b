// The rule model's accessors and equality, on rules real portmap wrote: iptables lines read by iptables/text.ts,
// nft's JSON read by nftables/json.ts.
import { describe, expect, it } from "vitest";
import {
  addressMatch,
  commentOf,
  destinationOf,
  dnatOf,
  dportOf,
  jumpOf,
  protocolOf,
  sameRule,
  sameRules,
  sourceOf,
  takenPorts,
  withDestination,
} from "../../../src/core/rule.js";
import { parseChainJson } from "../../../src/nftables/json.js";
import { CHAIN, chainOf, fixture, rules } from "../fixtures.js";

const iptables = rules(chainOf("reference-v4"));
const nft = parseChainJson(fixture("nftables/reference-v4.json"));

describe("a rule's parts", () => {
  it("gives protocol, port, addresses and target of portmap's iptables rules", () => {
    // -s 127.0.0.1/32 -d 192.0.2.10/32 -p tcp -m tcp --dport 8443 -j CNI-HOSTPORT-SETMARK
    const mark = iptables[4]!;
    expect([protocolOf(mark), dportOf(mark), sourceOf(mark), destinationOf(mark), jumpOf(mark), dnatOf(mark)]).toEqual([
      "tcp",
      8443,
      "127.0.0.1",
      "192.0.2.10",
      "CNI-HOSTPORT-SETMARK",
      undefined,
    ]);
    const dnat = iptables[5]!;
    expect([jumpOf(dnat), dnatOf(dnat), commentOf(dnat)]).toEqual([undefined, "10.244.1.5:443", undefined]);
  });

  it("gives the comment (the container ID) and the handle of portmap's nftables rules", () => {
    expect(nft.map((r) => [commentOf(r), r.handle, protocolOf(r), dportOf(r), destinationOf(r), dnatOf(r)])).toEqual([
      ["abc123", 11, "tcp", 8080, undefined, "10.244.1.5:80"],
      ["abc123", 12, "tcp", 8443, "192.0.2.10", "10.244.1.5:443"],
      ["abc123", 13, "udp", 5353, undefined, "10.244.1.5:53"],
    ]);
  });

  it("takes the ports of its DNAT rules only, per protocol", () => {
    expect([...takenPorts(iptables)]).toEqual(["tcp/8080", "tcp/8443", "udp/5353"]);
    expect([...takenPorts(nft)]).toEqual(["tcp/8080", "tcp/8443", "udp/5353"]);
    expect(takenPorts(iptables.filter((r) => jumpOf(r) !== undefined)).size).toBe(0);
  });

  it("keeps host addresses bare, and reads a negated match as no address", () => {
    expect([addressMatch("192.0.2.10/32"), addressMatch("2001:db8::10/128"), addressMatch("10.244.1.0/24")]).toEqual([
      { address: "192.0.2.10", negated: false },
      { address: "2001:db8::10", negated: false },
      { address: "10.244.1.0/24", negated: false },
    ]);
    const negated = { ...iptables[0]!, destination: addressMatch("192.0.2.10/32", true) };
    expect(destinationOf(negated)).toBeUndefined();
  });
});

describe("rules compared", () => {
  it("sets or removes a destination, leaving the rest", () => {
    const scoped = withDestination(iptables[2]!, "192.0.2.11");
    expect(scoped).toEqual({ ...iptables[2], destination: { address: "192.0.2.11", negated: false } });
    expect(withDestination(scoped, undefined)).toEqual(iptables[2]);
  });

  it("are the same by every part but the handle, in the same order", () => {
    expect(sameRule({ ...nft[0]!, handle: 99 }, nft[0]!)).toBe(true);
    expect(sameRule(withDestination(nft[0]!, "192.0.2.11"), nft[0]!)).toBe(false);
    expect(sameRule({ ...iptables[0]!, chain: "OTHER" }, iptables[0]!)).toBe(false);
    expect(sameRules(rules(chainOf("reference-v4")), iptables)).toBe(true);
    expect(sameRules([...iptables].reverse(), iptables)).toBe(false);
    expect(sameRules(iptables.slice(1), iptables)).toBe(false);
    expect(iptables[0]!.chain).toBe(CHAIN);
  });
});
