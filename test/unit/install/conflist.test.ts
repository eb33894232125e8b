// The conflist edit: our entry right after portmap, every other byte kept, in the file's own style.
import { readFile, writeFile } from "node:fs/promises";
import { describe, expect, it } from "vitest";
import { CAPABILITIES, conflist, flannel, install, plugins, useFlannelNode } from "./flannel-node.js";

useFlannelNode();

describe("the entry in flannel's conflist", () => {
  it("keeps every other byte of the file, in flannel's 2-space style", async () => {
    await install([]);
    const text = await readFile(conflist, "utf8");
    const portmapEnd = flannel.indexOf("    }\n  ]") + "    }".length;
    expect(text.slice(0, portmapEnd)).toBe(flannel.slice(0, portmapEnd));
    expect(text.slice(text.length - (flannel.length - portmapEnd))).toBe(flannel.slice(portmapEnd));
    expect(text.slice(portmapEnd, text.length - (flannel.length - portmapEnd))).toBe(
      [
        ",",
        "    {",
        '      "type": "portmap-hostip",',
        '      "capabilities": {',
        '        "portMappings": true,',
        '        "io.kubernetes.cri.pod-annotations": true',
        "      }",
        "    }",
      ].join("\n"),
    );
    expect(JSON.parse(text).cniVersion).toBe("0.3.1");
  });

  it("replaces an outdated or misplaced entry instead of adding a second one", async () => {
    const doc = JSON.parse(flannel);
    doc.plugins.unshift({ type: "portmap-hostip", defaultHostIP: "any" });
    doc.plugins.push({ type: "portmap-hostip", annotation: "old/key" });
    await writeFile(conflist, JSON.stringify(doc, null, 2));
    await install(["--annotation", "example.com/host-ip"]);
    expect(await plugins()).toEqual([
      JSON.parse(flannel).plugins[0],
      JSON.parse(flannel).plugins[1],
      { type: "portmap-hostip", capabilities: CAPABILITIES, annotation: "example.com/host-ip" },
    ]);
  });

  it("writes a compact entry into a compact file", async () => {
    await writeFile(conflist, JSON.stringify(JSON.parse(flannel)));
    await install([]);
    const text = await readFile(conflist, "utf8");
    expect(text).not.toContain("\n");
    expect(text).toContain(`"capabilities":{"portMappings":true}},{"type":"portmap-hostip",`);
  });

  it("fails clearly, changing nothing, when the list has no portmap", async () => {
    const doc = JSON.parse(flannel);
    doc.plugins.pop();
    const text = JSON.stringify(doc, null, 2);
    await writeFile(conflist, text);
    const run = await install([]);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/10-flannel\.conflist has no "portmap" plugin: hostPorts do not work/);
    expect(await readFile(conflist, "utf8")).toBe(text);
  });
});
