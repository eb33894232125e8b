// The DaemonSet and its image must agree with the installer's flags and the release they ship.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { parseInstallArgs } from "../../src/cli/install.js";
import { DEFAULT_STATE_DIR } from "../../src/core/config.js";
import { STANDARD } from "../../src/install/files.js";

const ROOT = join(import.meta.dirname, "../..");
const { version } = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8"));
const dockerfile = readFileSync(join(ROOT, "deploy/Dockerfile"), "utf8");
const manifest = parse(readFileSync(join(ROOT, "deploy/daemonset.yaml"), "utf8"));
const pod = manifest.spec.template.spec;

interface Container {
  name: string;
  image: string;
  args: string[];
  env?: Array<{ name: string; valueFrom?: { fieldRef?: { fieldPath: string } } }>;
  securityContext: { privileged?: boolean };
  volumeMounts: Array<{ name: string; mountPath: string; readOnly?: boolean }>;
  livenessProbe?: { exec: { command: string[] } };
  readinessProbe?: { exec: { command: string[] } };
}

/** The flags as kubelet passes them: `$(VAR)` expanded from the container's env (here: a dual-stack node's status.hostIPs). */
function installArgs(container: Container) {
  const values: Record<string, string> = { "status.hostIPs": "192.0.2.10,2001:db8::10" };
  const env = new Map((container.env ?? []).map((e) => [e.name, values[e.valueFrom?.fieldRef?.fieldPath ?? ""]]));
  return parseInstallArgs(
    container.args.slice(1).map((a) => a.replace(/\$\((\w+)\)/g, (_, name: string) => env.get(name) ?? `$(${name})`)),
  );
}

describe("deploy/daemonset.yaml", () => {
  it("runs on every Linux node, amd64 and arm64 alike (no architecture selector)", () => {
    expect(pod.nodeSelector).toEqual({ "kubernetes.io/os": "linux" });
    expect(JSON.stringify(pod.affinity ?? {})).not.toContain("kubernetes.io/arch");
  });

  it("is a node-critical DaemonSet in kube-system that runs everywhere and needs no API access", () => {
    expect(manifest).toMatchObject({
      apiVersion: "apps/v1",
      kind: "DaemonSet",
      metadata: { namespace: "kube-system" },
    });
    expect(manifest.spec.selector.matchLabels).toEqual(manifest.spec.template.metadata.labels);
    expect(pod.priorityClassName).toBe("system-node-critical");
    expect(pod.tolerations).toEqual([{ operator: "Exists" }]);
    expect(pod.automountServiceAccountToken).toBe(false);
  });

  it("runs the keeper in the node's network namespace, with the cache, the plugin's records and the xtables lock", () => {
    expect(pod.hostNetwork).toBe(true);
    const [watch] = pod.containers as Container[];
    const args = watch!.args;
    const flag = (name: string) => args[args.indexOf(name) + 1];
    expect(flag("--iptables")).toBe("auto");
    const hostPaths = new Map<string, { path: string; type: string }>(
      (pod.volumes as Array<{ name: string; hostPath: { path: string; type: string } }>).map((v) => [
        v.name,
        v.hostPath,
      ]),
    );
    const mount = (path: string) => {
      const m = watch!.volumeMounts.find((x) => x.mountPath === path);
      return m && { ...hostPaths.get(m.name), readOnly: m.readOnly ?? false };
    };
    expect(mount(flag("--cache-dir")!)).toEqual({ path: "/var/lib/cni", type: "DirectoryOrCreate", readOnly: true });
    // Where the plugin on the node writes its records by default: the same directory.
    expect(mount(flag("--state-dir")!)).toEqual({
      path: DEFAULT_STATE_DIR,
      type: "DirectoryOrCreate",
      readOnly: false,
    });
    expect(mount("/run/xtables.lock")).toEqual({ path: "/run/xtables.lock", type: "FileOrCreate", readOnly: false });
  });

  it("probes the keeper with install --check on the same directories", () => {
    const [watch] = pod.containers as Container[];
    for (const probe of [watch!.livenessProbe, watch!.readinessProbe]) {
      const [binary, ...args] = probe!.exec.command;
      expect(dockerfile).toMatch(new RegExp(`^ENTRYPOINT \\["${binary}"\\]$`, "m"));
      expect(parseInstallArgs(args.slice(1)).mode).toBe("check");
      for (const name of ["--cni-bin-dir", "--cni-conf-dir", "--cache-dir", "--state-dir"])
        expect(args[args.indexOf(name) + 1]).toBe(watch!.args[watch!.args.indexOf(name) + 1]);
    }
  });
});

describe("deploy/daemonset.yaml (install)", () => {
  it("installs in a privileged init container and keeps the entry with a privileged --watch container", () => {
    const [init] = pod.initContainers as Container[];
    const [watch] = pod.containers as Container[];
    expect([init?.args[0], installArgs(init!).mode]).toEqual(["install", "install"]);
    expect([watch?.args[0], installArgs(watch!).mode]).toEqual(["install", "watch"]);
    for (const container of [init!, watch!]) expect(container.securityContext.privileged).toBe(true);
  });

  it("points --cni-bin-dir and --cni-conf-dir at writable mounts of the node's CNI directories", () => {
    const hostPaths = new Map<string, string>(
      (pod.volumes as Array<{ name: string; hostPath: { path: string } }>).map((volume) => [
        volume.name,
        volume.hostPath.path,
      ]),
    );
    for (const container of [...pod.initContainers, ...pod.containers] as Container[]) {
      const options = installArgs(container);
      const hostPathOf = (dir: string | undefined): string | undefined => {
        const mount = container.volumeMounts.find((m) => m.mountPath === dir);
        expect(mount?.readOnly, `${container.name} mount of ${dir}`).toBeFalsy();
        return mount && hostPaths.get(mount.name);
      };
      expect(hostPathOf(options.cniBinDir), container.name).toBe(STANDARD.binDir);
      expect(hostPathOf(options.cniConfDir), container.name).toBe(STANDARD.confDir);
    }
  });

  it("gives both containers the node's Kubernetes addresses from the downward API as kubeNodeIPs", () => {
    for (const container of [...pod.initContainers, ...pod.containers] as Container[]) {
      expect(installArgs(container).settings, container.name).toEqual({ kubeNodeIPs: ["192.0.2.10", "2001:db8::10"] });
    }
  });

  it("runs this release's image", () => {
    for (const container of [...pod.initContainers, ...pod.containers] as Container[]) {
      expect(container.image).toBe(`portmap-hostip:${version}`);
    }
  });
});

/** The Dockerfile's stages: name (or base image) and instructions, comments dropped. */
function stages(text: string): Array<{ from: string; name: string | undefined; steps: string[] }> {
  const out: Array<{ from: string; name: string | undefined; steps: string[] }> = [];
  for (const line of text.split("\n").filter((l) => l.trim() !== "" && !l.startsWith("#"))) {
    const from = /^FROM (\S+)(?: AS (\S+))?$/.exec(line);
    if (from) out.push({ from: from[1]!, name: from[2], steps: [] });
    else out.at(-1)!.steps.push(line);
  }
  return out;
}

describe("deploy/Dockerfile", () => {
  const all = stages(dockerfile);
  const final = all.at(-1)!;

  it("builds one image for amd64 and arm64, each with its own single executable", () => {
    const executables = { amd64: "dist/portmap-hostip-linux-x64", arm64: "dist/portmap-hostip-linux-arm64" };
    for (const [arch, file] of Object.entries(executables)) {
      expect(all.find((s) => s.name === `plugin-${arch}`)).toEqual({
        from: "scratch",
        name: `plugin-${arch}`,
        steps: [`COPY ${file} /portmap-hostip`],
      });
    }
    expect(all.find((s) => s.name === "plugin")?.from).toBe("plugin-${TARGETARCH}");
    expect(dockerfile).toContain(
      `docker buildx build --platform linux/amd64,linux/arm64 -f deploy/Dockerfile -t portmap-hostip:${version} .`,
    );
  });

  it("runs the executable on a multi-arch Debian base as the installer's watch mode", () => {
    expect(final.from).toBe("debian:12-slim");
    expect(final.steps.slice(-3)).toEqual([
      "COPY --from=plugin /portmap-hostip /portmap-hostip",
      'ENTRYPOINT ["/portmap-hostip"]',
      'CMD ["install", "--watch"]',
    ]);
  });

  it("carries what the keeper runs: iptables (both variants), ip, conntrack, nft", () => {
    const installed = /apt-get install -y --no-install-recommends ([^\\\n]+)/
      .exec(dockerfile)?.[1]
      ?.trim()
      .split(/\s+/);
    expect(installed).toEqual(["iptables", "iproute2", "conntrack", "nftables"]);
  });
});
