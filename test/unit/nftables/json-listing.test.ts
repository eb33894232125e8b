// One pod's rules picked out of a whole `nft -a -j list chain` listing (recorded from portmap v1.9.1's nftables
// backend) without parsing the other rules: the same rules, handles included, as parsing it all gives.
import { readdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { commentOf } from "../../../src/core/rule.js";
import { parseChainJson, podRules, podRulesOfListing } from "../../../src/nftables/json.js";
import { fixture } from "../fixtures.js";

const DIR = fileURLToPath(new URL("../../fixtures/nftables/", import.meta.url));
const listings = readdirSync(DIR).filter((f) => f.endsWith(".json"));
// Some listings are empty (a family portmap wrote nothing in); these hold several containers' rules.
const busy = ["reference-v4.json", "repeated-v4.json", "repeated-v6.json"];

describe("a pod's rules from a listing", () => {
  it.each(listings)("%s: every container's rules, and none of a container it lacks", (file) => {
    const text = fixture(`nftables/${file}`);
    const all = parseChainJson(text);
    const ids = [...new Set(all.flatMap((r) => commentOf(r) ?? []))];
    for (const id of [...ids, "zzz999", "abc"]) expect(podRulesOfListing(text, id)).toEqual(podRules(all, id));
  });

  it("has listings with rules to pick from", () => {
    for (const file of busy) expect(parseChainJson(fixture(`nftables/${file}`)).length).toBeGreaterThan(1);
  });

  it("reads a listing of another layout (compact JSON) whole, with the same result", () => {
    const text = fixture("nftables/repeated-v4.json");
    const compact = JSON.stringify(JSON.parse(text));
    for (const id of ["abc123", "def456"]) expect(podRulesOfListing(compact, id)).toEqual(podRulesOfListing(text, id));
  });

  it("is not fooled by the key inside another rule's comment text", () => {
    const text = fixture("nftables/repeated-v4.json").replace(
      '"comment": "def456"',
      `"comment": ${JSON.stringify('x "comment": "abc123"')}`,
    );
    expect(podRulesOfListing(text, "abc123")).toEqual(podRules(parseChainJson(text), "abc123"));
  });
});
