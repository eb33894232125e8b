// Every command's --help lists every flag it takes, once, under the heading it belongs to.
import { describe, expect, it } from "vitest";
import { INSTALL_FLAGS, INSTALL_HELP } from "../../../src/cli/install.js";
import { OPS_FLAGS, runOps, USAGE } from "../../../src/cli/ops.js";

/** The flags each option line of `text` starts with ("  --flag …" or "  -h, --flag …"), by the heading above it. */
function optionLines(text: string): Map<string, string[]> {
  const sections = new Map<string, string[]>();
  let heading = "";
  let previous = "";
  for (const line of text.split("\n")) {
    // A heading is the first line of an unindented paragraph.
    if (/^\S/.test(line) && previous === "") heading = line;
    previous = line;
    const flag = /^ {2}(?:-\w, )?--([\w-]+)/.exec(line)?.[1];
    if (flag !== undefined) sections.set(heading, [...(sections.get(heading) ?? []), flag]);
  }
  return sections;
}

describe("install --help", () => {
  const sections = optionLines(INSTALL_HELP);
  const under = (start: string) => [...sections].find(([heading]) => heading.startsWith(start))?.[1];

  it("lists every flag once", () => {
    expect([...sections.values()].flat().sort()).toEqual(Object.keys(INSTALL_FLAGS).sort());
  });

  it("puts each under its heading: where, the entry's options, the modes, the keeper's", () => {
    expect(under("Where")).toEqual(["cni-bin-dir", "cni-conf-dir", "conflist", "binary"]);
    expect(under("Entry options")).toEqual([
      "default-host-ip",
      "node-ips",
      "kube-node-ips",
      "node-interfaces",
      "exclude-interfaces",
      "allowed-host-cidrs",
      "annotation",
      "log-file",
    ]);
    expect(under("Modes")).toEqual(["watch", "check", "uninstall", "dry-run", "help"]);
    expect(under("The keeper")).toEqual(["cache-dir", "state-dir", "resync", "iptables"]);
  });
});

describe.each(Object.keys(OPS_FLAGS))("%s --help", (command) => {
  it("names every flag in its usage line and explains each once", async () => {
    let out = "";
    expect(await runOps(command as "status", ["--help"], { stdout: (t) => void (out += t) })).toBe(0);
    expect(out).toBe(USAGE[command]);
    const [usage = "", ...body] = out.split("\n");
    const flags = OPS_FLAGS[command] ?? [];
    for (const flag of flags.filter((f) => f !== "help")) expect(usage, flag).toContain(`[--${flag}`);
    expect([...optionLines(body.join("\n")).values()].flat().sort()).toEqual([...flags].sort());
  });
});
