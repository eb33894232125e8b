import { describe, expect, it } from "vitest";
import { readAttachmentEnv, readCommand } from "../../../src/cni/env.js";
import { parseEnvelope } from "../../../src/core/config.js";
import { podLabel } from "../../../src/core/names.js";
import { cniError, codeOf, containerdFixtures as fixtures, stdinOf } from "../fixtures.js";

const base = { CNI_COMMAND: "ADD", CNI_CONTAINERID: "abc123", CNI_NETNS: "/var/run/netns/p", CNI_IFNAME: "eth0" };

describe("CNI environment", () => {
  it("reads a valid ADD environment and kubelet's CNI_ARGS", () => {
    const env = readAttachmentEnv(
      { ...base, CNI_ARGS: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web" },
      "ADD",
    );
    expect(env).toMatchObject({ containerId: "abc123", ifname: "eth0", netns: "/var/run/netns/p" });
    expect(podLabel(env)).toBe("default/web (container abc123)");
    expect(podLabel(readAttachmentEnv(base, "ADD"))).toBe("container abc123");
  });

  it.each([
    [{ CNI_COMMAND: undefined }, 4],
    [{ CNI_COMMAND: "FROB" }, 4],
    [{ CNI_CONTAINERID: undefined }, 4],
    [{ CNI_CONTAINERID: "-bad" }, 3],
    [{ CNI_CONTAINERID: "a b" }, 3],
    [{ CNI_IFNAME: "" }, 4],
    [{ CNI_IFNAME: "x".repeat(16) }, 4],
    [{ CNI_IFNAME: "eth/0" }, 4],
    [{ CNI_IFNAME: ".." }, 4],
    [{ CNI_NETNS: undefined }, 4],
    [{ CNI_ARGS: "novalue" }, 4],
  ])("%j → code %i", (change, code) => {
    const env = { ...base, ...change };
    expect(cniError(() => readAttachmentEnv(env, readCommand(env))).code).toBe(code);
  });

  it("does not need CNI_NETNS for DEL", () => {
    expect(readAttachmentEnv({ ...base, CNI_NETNS: undefined }, "DEL").netns).toBe("");
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

describe("what containerd sends, replayed", () => {
  describe.each(fixtures.map((f) => [f.shape, f] as const))("%s", (_shape, f) => {
    const add = f.calls.find((c) => c.command === "ADD")!;

    it("is one ADD, then a DEL per teardown (after a failed ADD, one; after Stop and Remove, two)", () => {
      expect(f.calls.map((c) => c.command)).toEqual(add.code === 0 ? ["ADD", "DEL", "DEL"] : ["ADD", "DEL"]);
      for (const c of f.calls) expect(readCommand(c.env)).toBe(c.command);
    });

    it("accepts every DEL: no netns (after Stop), no prevResult (cniVersion 0.3.1), CNI_ARGS in another order", () => {
      for (const del of f.calls.filter((c) => c.command === "DEL")) {
        expect(del.code).toBe(0);
        expect(readAttachmentEnv(del.env, "DEL").containerId).toBe(add.env["CNI_CONTAINERID"]);
        expect(parseEnvelope(stdinOf(del)).name).toBe("cri-e2e");
      }
    });
  });
});
