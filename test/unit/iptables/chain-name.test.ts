import { describe, expect, it } from "vitest";
import { portmapChainName } from "../../../src/iptables/chain-name.js";

describe("portmapChainName", () => {
  it.each([
    ["cbr0", "abc123", "CNI-DN-3e9a3d0f9583cdc0e7133"],
    ["cbr0", "e2etest01", "CNI-DN-97432852e321b0caf4228"],
    [
      "testNetName",
      "icee6giejonei6sohng6ahngee7laquohquee9shiGo7fohferakah3Feiyoolu2pei7ciPhoh7shaoX6vai3vuf0ahfaeng8yohb9ceu0daez5hashee8ooYai5wa3y",
      "CNI-DN-bfd599665540dd91d5d28",
    ],
  ])("%s + %s → %s (portmap's own vectors)", (name, id, chain) => {
    expect(portmapChainName(name, id)).toBe(chain);
  });

  it("is at most 28 characters, the iptables limit", () => {
    expect(portmapChainName("n", "x".repeat(500))).toHaveLength(28);
  });
});
