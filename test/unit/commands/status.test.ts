// CNI STATUS: ready when the first backend portmap would use works; a node without that backend's tool at all
// leaves portmap the next one, which must work then.
import { describe, expect, it } from "vitest";
import type { RuleBackend } from "../../../src/backends/backend.js";
import { cniStatus } from "../../../src/commands/status.js";
import { CniError, Code } from "../../../src/core/errors.js";
import { NotInstalled } from "../../../src/host/tool.js";
import { fakeBackend } from "../fake-backend.js";

/** A backend whose tool answers (`fails` undefined), or fails so; each check noted in `asked`. */
const backend = (tool: string, asked: string[], fails?: Error): RuleBackend =>
  fakeBackend(tool, {
    usable: async () => {
      asked.push(tool);
      if (fails) throw fails;
    },
  });
const missing = (tool: string) => new NotInstalled(Code.IoFailure, `cannot run ${tool}: spawn ${tool} ENOENT`);

describe("STATUS", () => {
  it("is ready when the first backend is usable, and asks no other", async () => {
    const asked: string[] = [];
    await cniStatus([backend("iptables", asked), backend("nft", asked)]);
    expect(asked).toEqual(["iptables"]);
  });

  it("asks the next backend when the first one's tool is not installed", async () => {
    const asked: string[] = [];
    await cniStatus([backend("iptables", asked, missing("iptables")), backend("nft", asked)]);
    expect(asked).toEqual(["iptables", "nft"]);
  });

  it("is not ready (50) when the last one fails too, naming every tool and the last one's words", async () => {
    const asked: string[] = [];
    const nftFails = new CniError(Code.IoFailure, "nft --check failed (exit 1)", "Error: Could not process rule");
    const err = await cniStatus([
      backend("iptables", asked, missing("iptables")),
      backend("nft", asked, nftFails),
    ]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CniError);
    expect(err).toMatchObject({
      code: Code.PluginNotAvailable,
      message: "neither iptables nor nft is usable: nft --check failed (exit 1)",
      details: "Error: Could not process rule",
      cause: nftFails,
    });
    const none = await cniStatus([
      backend("iptables", [], missing("iptables")),
      backend("nft", [], missing("nft")),
    ]).catch((e: unknown) => e);
    expect(none).toMatchObject({
      code: Code.PluginNotAvailable,
      message: "neither iptables nor nft is usable: cannot run nft: spawn nft ENOENT",
    });
  });

  it("is not ready (50) when the first backend's tool is there but fails, and asks no other", async () => {
    const asked: string[] = [];
    const err = await cniStatus([
      backend("iptables", asked, new Error("iptables -t nat -S POSTROUTING failed (exit 4)")),
      backend("nft", asked),
    ]).catch((e: unknown) => e);
    expect(err).toMatchObject({
      code: Code.PluginNotAvailable,
      message: "iptables is not usable: iptables -t nat -S POSTROUTING failed (exit 4)",
      details: "",
    });
    expect(asked).toEqual(["iptables"]);
  });
});
