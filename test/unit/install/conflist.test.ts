// The conflist edit: our entry right after portmap, every other byte kept, in the file's own style.
import { readFile, writeFile } from "node:fs/promises";
import { describe, expect, it } from "vitest";
import { installedEntry, pluginEntry, withEntry, withoutEntry } from "../../../src/install/conflist.js";
import { fixture } from "../fixtures.js";
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

describe("the plugins list, edited as text", () => {
  const entry = pluginEntry({ defaultHostIP: "node" });
  const FLANNEL = fixture("flannel/cni-conf.json");
  const ours =
    '{"type":"portmap-hostip","capabilities":{"portMappings":true,"io.kubernetes.cri.pod-annotations":true}}';

  it("makes our entry: both capabilities, then the settings", () => {
    expect(entry).toEqual({ type: "portmap-hostip", capabilities: CAPABILITIES, defaultHostIP: "node" });
  });

  it("gives the same string when the entry is already right after portmap", () => {
    const once = withEntry(FLANNEL, entry, "f");
    expect(withEntry(once, entry, "f")).toBe(once);
    expect(installedEntry(once, "f")).toEqual(entry);
    expect(installedEntry(FLANNEL, "f")).toBeUndefined();
  });

  it("writes the entry compact into a list kept on one line, leaving that line's other bytes", () => {
    const text = '{\n  "name": "n",\n  "plugins": [{ "type": "bridge" }, { "type": "portmap" }]\n}\n';
    expect(withEntry(text, pluginEntry({}), "f")).toBe(
      `{\n  "name": "n",\n  "plugins": [{ "type": "bridge" }, { "type": "portmap" },${ours}]\n}\n`,
    );
  });

  it("indents the entry as the file indents, tabs included", () => {
    const text = '{\n\t"plugins": [\n\t\t{\n\t\t\t"type": "portmap"\n\t\t}\n\t]\n}\n';
    expect(withEntry(text, pluginEntry({}), "f")).toBe(
      '{\n\t"plugins": [\n\t\t{\n\t\t\t"type": "portmap"\n\t\t},\n\t\t{\n\t\t\t"type": "portmap-hostip",\n\t\t\t"capabilities": {\n\t\t\t\t"portMappings": true,\n\t\t\t\t"io.kubernetes.cri.pod-annotations": true\n\t\t\t}\n\t\t}\n\t]\n}\n',
    );
  });

  it("removes every entry of ours with its separator, first, last or only; gives the same string when there is none", () => {
    expect(withoutEntry(`{"plugins":[${ours},{"type":"portmap"}]}`, "f")).toBe('{"plugins":[{"type":"portmap"}]}');
    expect(withoutEntry(`{"plugins":[{"type":"portmap"},${ours},${ours}]}`, "f")).toBe(
      '{"plugins":[{"type":"portmap"}]}',
    );
    expect(withoutEntry(`{"plugins":[ ${ours} ]}`, "f")).toBe('{"plugins":[  ]}');
    expect(withoutEntry(FLANNEL, "f")).toBe(FLANNEL);
  });

  it("refuses, naming the file, what is not JSON or not a conflist", () => {
    expect(() => withEntry("{", entry, "/etc/cni/net.d/10.conflist")).toThrow(
      /^\/etc\/cni\/net\.d\/10\.conflist is not valid JSON: /,
    );
    expect(() => withoutEntry('{"type":"bridge"}', "/etc/cni/net.d/10.conf")).toThrow(
      '/etc/cni/net.d/10.conf is not a conflist (no "plugins" list); chained plugins such as portmap need one',
    );
  });
});
