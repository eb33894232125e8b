// portmap's nftables tables through a stand-in `nft` printing what the real one printed (test/fixtures/nftables):
// a listing, a batch, and STATUS's check.
import { describe, expect, it } from "vitest";
import { Code, RulesChanged } from "../../../src/core/errors.js";
import { parseChainJson } from "../../../src/nftables/json.js";
import { applyBatch, checkNftUsable, readHostports } from "../../../src/nftables/nft.js";
import { fixture } from "../fixtures.js";
import { type Answer, type Tools, useToolsOnPath } from "../tools.js";

const onPath = useToolsOnPath();
const withNft = (answers: readonly Answer[] | undefined): Tools => onPath(answers ? { nft: answers } : {});

describe("nft", () => {
  it("lists a family's chain of cni_hostport; none when portmap never created the table, or without nft", async () => {
    withNft([{ stdout: fixture("nftables/reference-v6.json") }]);
    expect(await readHostports(6)).toEqual(parseChainJson(fixture("nftables/reference-v6.json")));
    withNft([{ stderr: fixture("nftables/no-table.stderr"), code: 1 }]);
    expect(await readHostports(4)).toBeUndefined();
    withNft(undefined);
    expect(await readHostports(4, "masquerading")).toBeUndefined();
  });

  it("applies a batch as its argument; a gone handle is a change to read again (11)", async () => {
    const t = withNft([{}]);
    await applyBatch('{"nftables":[]}');
    expect(t.calls()).toEqual([{ tool: "nft", args: ["-j", '{"nftables":[]}'], stdin: "" }]);
    withNft([{ stderr: fixture("nftables/gone-handle.stderr"), code: 1 }]);
    const err = await applyBatch('{"nftables":[]}').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RulesChanged);
    expect(err).toMatchObject({ code: Code.TryAgainLater });
  });

  it("refuses, running nothing, a batch over nft's argument limit, and fails without nft", async () => {
    const t = withNft([{}]);
    await expect(applyBatch(`{"nftables":[${"{},".repeat(50_000)}{}]}`)).rejects.toMatchObject({
      code: Code.IoFailure,
      message: expect.stringMatching(/^the nftables batch is \d+ bytes, over nft's argument limit of 122880$/),
    });
    expect(t.calls()).toEqual([]);
    withNft(undefined);
    await expect(applyBatch('{"nftables":[]}')).rejects.toMatchObject({ message: "cannot run nft: not found on PATH" });
  });

  it("is usable when it checks adding portmap's table; not without nft", async () => {
    const t = withNft([{}]);
    await checkNftUsable();
    expect(t.calls().map((c) => c.args)).toEqual([["--check", "add table ip cni_hostport"]]);
    withNft(undefined);
    await expect(checkNftUsable()).rejects.toMatchObject({
      code: Code.IoFailure,
      message: "cannot run nft: not found on PATH",
    });
  });
});
