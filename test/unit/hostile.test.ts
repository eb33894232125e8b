// Hostile input at the plugin's own boundaries, in process: the stdin reader on real file descriptors
// (size limit, strict UTF-8), the CNI_* environment, and configuration keys that name Object.prototype
// members. Each gives the documented CniError and nothing else.
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { podBackends } from "../../src/backends/registry.js";
import { planPodChains } from "../../src/backends/scope-pod.js";
import { readAttachmentEnv, readCommand } from "../../src/cni/env.js";
import { decodeJson, readStdin } from "../../src/cni/stdin.js";
import { parseNetConf } from "../../src/core/config.js";
import { CniError, Code } from "../../src/core/errors.js";

/** The CniError's code, or "ok" when `f` returns. */
function codeOf(f: () => unknown): number | "ok" {
  try {
    f();
  } catch (err) {
    if (err instanceof CniError) return err.code;
    throw err;
  }
  return "ok";
}

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

  it.each([
    ["an array", []],
    ["a string", "ADD"],
    ["null", null],
    ["a number", 42],
  ])("a configuration that is %s → 7", (_what, json) => {
    expect(codeOf(() => parseNetConf(json))).toBe(Code.InvalidConfig);
  });

  it("a configuration nested 10,000 deep where a string belongs → 7 (not a stack overflow)", () => {
    const deep = JSON.parse("[".repeat(10_000) + "]".repeat(10_000)) as unknown;
    expect(codeOf(() => parseNetConf(deep))).toBe(Code.InvalidConfig);
    expect(codeOf(() => parseNetConf({ cniVersion: deep, name: "cbr0" }))).toBe(Code.InvalidConfig);
  });
});

describe("CNI_* environment", () => {
  const good = {
    CNI_COMMAND: "ADD",
    CNI_CONTAINERID: "abc123",
    CNI_NETNS: "/var/run/netns/x",
    CNI_IFNAME: "eth0",
    CNI_ARGS: "",
  };

  it.each([
    [{ CNI_COMMAND: undefined }, 4],
    [{ CNI_COMMAND: "" }, 4],
    [{ CNI_COMMAND: "add" }, 4],
    [{ CNI_COMMAND: "ADD " }, 4],
    [{ CNI_COMMAND: "EXEC" }, 4],
    [{ CNI_COMMAND: "constructor" }, 4],
  ])("%o → %i", (change, code) => {
    expect(codeOf(() => readCommand({ ...good, ...change }))).toBe(code);
  });

  it.each([
    [{ CNI_CONTAINERID: undefined }, 4],
    [{ CNI_CONTAINERID: "" }, 4],
    [{ CNI_CONTAINERID: "-j" }, 3],
    [{ CNI_CONTAINERID: ".hidden" }, 3],
    [{ CNI_CONTAINERID: "a b" }, 3],
    [{ CNI_CONTAINERID: "$(reboot)" }, 3],
    [{ CNI_CONTAINERID: "a;b" }, 3],
    [{ CNI_CONTAINERID: "a\nb" }, 3],
    [{ CNI_CONTAINERID: "../x" }, 3],
    [{ CNI_CONTAINERID: "é" }, 3],
    [{ CNI_IFNAME: undefined }, 4],
    [{ CNI_IFNAME: "" }, 4],
    [{ CNI_IFNAME: "eth0123456789012" }, 4],
    [{ CNI_IFNAME: "." }, 4],
    [{ CNI_IFNAME: ".." }, 4],
    [{ CNI_IFNAME: "a/b" }, 4],
    [{ CNI_IFNAME: "a:b" }, 4],
    [{ CNI_IFNAME: "a b" }, 4],
    [{ CNI_IFNAME: "a\tb" }, 4],
    [{ CNI_NETNS: undefined }, 4],
    [{ CNI_ARGS: "K8S_POD_NAME" }, 4],
    [{ CNI_ARGS: "=x" }, 4],
  ])("%o → %i", (change, code) => {
    expect(codeOf(() => readAttachmentEnv({ ...good, ...change }, "ADD"))).toBe(code);
  });

  it("DEL needs no CNI_NETNS; a 15-character ifname and a long container ID are fine", () => {
    expect(codeOf(() => readAttachmentEnv({ ...good, CNI_NETNS: undefined }, "DEL"))).toBe("ok");
    expect(codeOf(() => readAttachmentEnv({ ...good, CNI_IFNAME: "eth012345678901" }, "ADD"))).toBe("ok");
    expect(codeOf(() => readAttachmentEnv({ ...good, CNI_CONTAINERID: "a".repeat(1000) }, "ADD"))).toBe("ok");
  });
});

describe("keys that name Object.prototype members", () => {
  it.each(["constructor", "toString", "valueOf", "hasOwnProperty"])(
    'annotation key "%s" that the pod does not set: no annotation (the node default applies), not a crash',
    async (annotation) => {
      const conf = parseNetConf({
        cniVersion: "1.0.0",
        name: "cbr0",
        annotation,
        defaultHostIP: "any",
        prevResult: { ips: [{ address: "10.244.1.5/24" }] },
        runtimeConfig: {
          portMappings: [{ hostPort: 8080, containerPort: 80 }],
          "io.kubernetes.cri.pod-annotations": {},
        },
      });
      expect(conf.annotationValue).toBeUndefined();
      // defaultHostIP "any" and no annotation: nothing to do, no iptables needed.
      await expect(
        planPodChains(
          conf,
          { command: "ADD", containerId: "abc123", netns: "/x", ifname: "eth0", args: new Map() },
          podBackends,
        ),
      ).resolves.toMatchObject({ plans: [], notes: [] });
    },
  );

  it("a portMapping whose keys are __proto__ or constructor gets no port from them (→ 7)", () => {
    const conf = (mapping: string) =>
      JSON.parse(`{"cniVersion":"1.0.0","name":"cbr0","runtimeConfig":{"portMappings":[${mapping}]}}`) as unknown;
    expect(codeOf(() => parseNetConf(conf('{"__proto__":{"hostPort":80},"containerPort":80}')))).toBe(
      Code.InvalidConfig,
    );
    expect(codeOf(() => parseNetConf(conf('{"constructor":80,"containerPort":80}')))).toBe(Code.InvalidConfig);
  });
});
