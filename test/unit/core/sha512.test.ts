import { createHash } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { sha512Hex } from "../../../src/core/sha512.js";

describe("sha512Hex", () => {
  it.each([
    [
      "",
      "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e",
    ],
    [
      "abc",
      "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
    ],
    [
      "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
      "8e959b75dae313da8cf4f72814fc143f8f7779c6eb9f7fa17299aeadb6889018501d289e4900f7e4331b99dec4b5433ac7d329eeb6dd26545e96e55b874be909",
    ],
  ])("FIPS 180-4 vector %#", (text, hex) => {
    expect(sha512Hex(text)).toBe(hex);
  });

  it("equals node:crypto's SHA-512 on any string (UTF-8, one to several blocks)", () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 400 }), fc.string({ unit: "grapheme", maxLength: 100 })), (text) => {
        expect(sha512Hex(text)).toBe(createHash("sha512").update(text).digest("hex"));
      }),
      { numRuns: 1000 },
    );
  });
});
