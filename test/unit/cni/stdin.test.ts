// Hostile input at the stdin reader, on real file descriptors: the size limit and strict UTF-8. Each gives the
// documented CniError and nothing else.
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { decodeJson, readStdin } from "../../../src/cni/stdin.js";
import { Code } from "../../../src/core/errors.js";
import { codeOf } from "../fixtures.js";

const dir = mkdtempSync(join(tmpdir(), "pmh-hostile-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** readStdin() on a file holding `bytes`, as fd 0 would be. */
function readFrom(bytes: Buffer): Buffer {
  const path = join(dir, `stdin-${Math.random().toString(36).slice(2)}`);
  writeFileSync(path, bytes);
  const fd = openSync(path, "r");
  try {
    return readStdin(fd);
  } finally {
    closeSync(fd);
  }
}

describe("stdin", () => {
  it("reads exactly 1 MiB, refuses (6) one byte more and 10 MB", () => {
    expect(readFrom(Buffer.alloc(1 << 20, 0x20)).length).toBe(1 << 20);
    expect(codeOf(() => readFrom(Buffer.alloc((1 << 20) + 1, 0x20)))).toBe(Code.DecodeFailure);
    expect(codeOf(() => readFrom(Buffer.alloc(10 * 1024 * 1024, 0x7b)))).toBe(Code.DecodeFailure);
  });

  it.each([
    ["empty", Buffer.alloc(0)],
    ["whitespace", Buffer.from(" \r\n\t")],
    ["not JSON", Buffer.from("name=cbr0")],
    ["truncated JSON", Buffer.from('{"cniVersion":"1.0.0","name":')],
    ["invalid UTF-8 (lone continuation byte)", Buffer.from([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0x80, 0x22, 0x7d])],
    [
      "invalid UTF-8 (overlong /)",
      Buffer.concat([Buffer.from('{"name":"'), Buffer.from([0xc0, 0xaf]), Buffer.from('"}')]),
    ],
    [
      "invalid UTF-8 (surrogate half)",
      Buffer.concat([Buffer.from('{"name":"'), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from('"}')]),
    ],
    ["UTF-16LE", Buffer.from('{"cniVersion":"1.0.0"}', "utf16le")],
  ])("%s → 6", (_what, bytes) => {
    expect(codeOf(() => decodeJson(bytes))).toBe(Code.DecodeFailure);
  });

  it("a leading byte order mark is dropped, as a UTF-8 decoder does", () => {
    expect(decodeJson(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('{"name":"é"}')]))).toEqual({
      name: "é",
    });
  });

  it("a JSON document nested 100,000 deep decodes or fails with 6, never a crash", () => {
    const text = "[".repeat(100_000) + "]".repeat(100_000);
    expect([Code.DecodeFailure, "ok"]).toContain(codeOf(() => decodeJson(Buffer.from(text))));
  });
});
