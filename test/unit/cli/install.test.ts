// `portmap-hostip install`'s flags: refusals naming the flag and the value, each option's conflist key, and the
// keeper's flags.
import { readdir, readFile } from "node:fs/promises";
import { describe, expect, it } from "vitest";
import { INSTALL_FLAGS, INSTALL_HELP, parseInstallArgs, runInstall } from "../../../src/cli/install.js";
import { binDir, CAPABILITIES, conflist, flannel, install, plugins, useFlannelNode } from "../install/flannel-node.js";
import { optionLines } from "./help-text.js";

useFlannelNode();

describe("install's flags", () => {
  it("rejects invalid option values naming the flag and the value", async () => {
    for (const [args, message] of [
      [["--default-host-ip", "192.0.2.300"], '--default-host-ip: invalid value "192.0.2.300"'],
      [["--default-host-ip", "node,192.0.2.1"], '--default-host-ip: invalid value "node"'],
      [["--node-ips", "192.0.2.1/24"], '--node-ips: invalid value "192.0.2.1/24"'],
      [["--kube-node-ips", "192.0.2.1,$(HOST_IPS)x"], '--kube-node-ips: invalid value "$(HOST_IPS)x"'],
      [["--node-interfaces", "eth0,this-name-is-too-long"], '--node-interfaces: invalid value "this-name-is-too-long"'],
      [["--exclude-interfaces", "a/b"], '--exclude-interfaces: invalid value "a/b"'],
      [["--allowed-host-cidrs", "192.0.2.0/33"], '--allowed-host-cidrs: invalid value "192.0.2.0/33"'],
      [["--annotation=-bad"], '--annotation: invalid value "-bad"'],
      [["--log-file", "portmap-hostip.log"], '--log-file: invalid value "portmap-hostip.log"'],
      [["--bogus"], "Unknown option '--bogus'"],
      [["--watch", "--uninstall"], "--watch and --uninstall exclude each other"],
    ] as const) {
      const run = await install([...args]);
      expect(run.code, args.join(" ")).toBe(2);
      expect(run.stderr).toContain(message);
    }
    expect(await readFile(conflist, "utf8")).toBe(flannel);
    expect(await readdir(binDir)).toEqual([]);
  });

  it("leaves an empty or unexpanded downward-API --kube-node-ips out, with a note, instead of failing", async () => {
    for (const value of ["", "$(HOST_IPS)"]) {
      const run = await install(["--kube-node-ips", value]);
      expect(run.code, value).toBe(0);
      expect(run.stderr, value).toMatch(/^note: --kube-node-ips .*left out\n$/);
      expect((await plugins())[2], value).toEqual({ type: "portmap-hostip", capabilities: CAPABILITIES });
    }
    await install(["--kube-node-ips", "$(HOST_IPS)", "--kube-node-ips", "192.0.2.10"]);
    expect((await plugins())[2]?.["kubeNodeIPs"]).toEqual(["192.0.2.10"]);
  });

  it("maps every option onto its conflist key", async () => {
    await install([
      "--default-host-ip=198.51.100.7",
      "--node-ips=192.0.2.1,2001:db8::1",
      "--kube-node-ips=192.0.2.2,2001:db8::2",
      "--node-interfaces=eth0",
      "--exclude-interfaces=",
      "--allowed-host-cidrs=192.0.2.0/24",
      "--allowed-host-cidrs=2001:db8::/64",
      "--annotation=example.com/ip",
      "--log-file=/var/log/portmap-hostip.log",
    ]);
    expect((await plugins())[2]).toEqual({
      type: "portmap-hostip",
      capabilities: CAPABILITIES,
      defaultHostIP: "198.51.100.7",
      nodeIPs: ["192.0.2.1", "2001:db8::1"],
      kubeNodeIPs: ["192.0.2.2", "2001:db8::2"],
      nodeInterfaces: ["eth0"],
      excludeInterfaces: [],
      allowedHostCIDRs: ["192.0.2.0/24", "2001:db8::/64"],
      annotation: "example.com/ip",
      logFile: "/var/log/portmap-hostip.log",
    });
  });
});

describe("the keeper's flags", () => {
  it("--check excludes the other modes; keeper flags need --cache-dir and valid values", async () => {
    expect(parseInstallArgs(["--check"]).mode).toBe("check");
    expect(() => parseInstallArgs(["--check", "--watch"])).toThrow(/--check excludes/);
    for (const [args, message] of [
      [["--watch", "--resync", "5"], /--resync needs --cache-dir/],
      [["--watch", "--cache-dir", "/c", "--resync", "0"], /--resync: invalid value "0"/],
      [["--watch", "--cache-dir", "/c", "--state-dir", "run"], /--state-dir: invalid value "run"/],
      [["--watch", "--cache-dir", "/c", "--iptables", "xt"], /--iptables: invalid value "xt"/],
      [["--watch", "--metrics-address", ":9731"], /--metrics-address needs --cache-dir/],
      [["--watch", "--log-format", "json"], /--log-format needs --cache-dir/],
      [
        ["--watch", "--cache-dir", "/c", "--log-format", "xml"],
        /--log-format: invalid value "xml": expected text or json/,
      ],
      ...["9731", "0.0.0.0", "0.0.0.0:0", ":65536", "::1:9731", "[192.0.2.1]:9731", "localhost:9731", "[::1]:x"].map(
        (address) =>
          [
            ["--watch", "--cache-dir", "/c", "--metrics-address", address],
            `--metrics-address: invalid value "${address}": expected IP:PORT or :PORT`,
          ] as const,
      ),
    ] as const) {
      const err: string[] = [];
      expect(await runInstall([...args], { stdout: () => {}, stderr: (t) => void err.push(t) })).toBe(2);
      expect(err.join("")).toMatch(message);
    }
  });

  it("--state-dir goes into the entry as stateDir: the plugin records where the keeper reads", () => {
    const args = ["--watch", "--cache-dir", "/var/lib/cni", "--state-dir", "/run/elsewhere"];
    expect(parseInstallArgs(args).settings).toEqual({ stateDir: "/run/elsewhere" });
    // The default is the plugin's too: the entry stays as the init container (no keeper flags) writes it.
    expect(parseInstallArgs([...args.slice(0, 4), "/run/portmap-hostip"]).settings).toEqual({});
  });
});

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
    expect(under("The keeper")).toEqual([
      "cache-dir",
      "state-dir",
      "resync",
      "iptables",
      "metrics-address",
      "log-format",
    ]);
  });
});
