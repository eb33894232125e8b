// The DaemonSet and its image must agree with the installer's flags and the release they ship.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { DaemonSet } from "kubernetes-models/apps/v1";
import { describe, expect, it } from "vitest";
import { parse, parseAllDocuments } from "yaml";
import { parseInstallArgs } from "../../src/cli/install.js";
import { DEFAULT_STATE_DIR } from "../../src/core/config.js";
import { STANDARD } from "../../src/install/files.js";

const ROOT = join(import.meta.dirname, "../..");
const { version } = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8"));
const dockerfile = readFileSync(join(ROOT, "deploy/Dockerfile"), "utf8");
const manifestText = readFileSync(join(ROOT, "deploy/daemonset.yaml"), "utf8");
// The service account and its RBAC come first; the DaemonSet last.
const manifest = parseAllDocuments(manifestText)
  .map((d) => d.toJS())
  .at(-1);
const pod = manifest.spec.template.spec;
const uninstall = parse(readFileSync(join(ROOT, "deploy/uninstall.yaml"), "utf8"));

interface Container {
  name: string;
  image: string;
  args: string[];
  env?: Array<{ name: string; valueFrom?: { fieldRef?: { fieldPath: string } } }>;
  securityContext: {
    privileged?: boolean;
    allowPrivilegeEscalation?: boolean;
    readOnlyRootFilesystem?: boolean;
    capabilities?: { drop?: string[]; add?: string[] };
  };
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

describe("deploy/daemonset.yaml and deploy/uninstall.yaml against the Kubernetes API schema", () => {
  it("are valid DaemonSets (kubernetes-models' JSON schemas)", () => {
    for (const ds of [manifest, uninstall]) expect(() => new DaemonSet(ds).validate()).not.toThrow();
  });

  it("the schema check has teeth: a wrong type is rejected", () => {
    const broken = structuredClone(manifest);
    broken.spec.template.spec.containers[0].ports = "8080";
    expect(() => new DaemonSet(broken).validate()).toThrow(/ports/);
  });
});

describe("deploy/daemonset.yaml (install)", () => {
  it("installs in an init container and keeps the entry with a --watch container, neither privileged", () => {
    const [init] = pod.initContainers as Container[];
    const [watch] = pod.containers as Container[];
    expect([init?.args[0], installArgs(init!).mode]).toEqual(["install", "install"]);
    expect([watch?.args[0], installArgs(watch!).mode]).toEqual(["install", "watch"]);
    // Measured on a cluster (test/cluster/daemonset.test.ts): the init step needs no capability, the keeper
    // NET_ADMIN and NET_RAW.
    expect(init!.securityContext).toEqual({
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ["ALL"] },
    });
    expect(watch!.securityContext).toEqual({
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ["ALL"], add: ["NET_ADMIN", "NET_RAW"] },
    });
    expect(pod.securityContext).toEqual({ seccompProfile: { type: "RuntimeDefault" } });
  });

  it("with status.hostIP for API servers before 1.29 (docs/install.md's edit), the node's one address", () => {
    const edited = parseAllDocuments(manifestText.replaceAll("fieldPath: status.hostIPs", "fieldPath: status.hostIP"))
      .map((d) => d.toJS())
      .at(-1);
    const [container] = edited.spec.template.spec.containers as Container[];
    expect(container!.env?.[0]?.valueFrom?.fieldRef?.fieldPath).toBe("status.hostIP");
    const values: Record<string, string> = { "status.hostIP": "192.0.2.10" };
    const args = container!.args.slice(1).map((a) => (a === "$(HOST_IPS)" ? values["status.hostIP"]! : a));
    expect(parseInstallArgs(args).settings).toEqual({ kubeNodeIPs: ["192.0.2.10"] });
  });

  it("points --cni-bin-dir and --cni-conf-dir at writable mounts of the node's CNI directories", () => {
    const hostPaths = new Map<string, string | undefined>(
      (pod.volumes as Array<{ name: string; hostPath?: { path: string } }>).map((volume) => [
        volume.name,
        volume.hostPath?.path,
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

describe("deploy/uninstall.yaml", () => {
  const spec = uninstall.spec.template.spec;
  const [step] = spec.initContainers as Container[];

  it("runs install --uninstall from the same image on the DaemonSet's CNI directories and state directory", () => {
    expect(uninstall.metadata).toMatchObject({ name: "portmap-hostip-uninstall", namespace: "kube-system" });
    expect(step!.image).toBe(`portmap-hostip:${version}`);
    expect(parseInstallArgs(step!.args.slice(1)).mode).toBe("uninstall");
    const hostPath = (volumes: Array<{ name: string; hostPath?: { path: string } }>, c: Container, dir: string) =>
      volumes.find((v) => v.name === c.volumeMounts.find((m) => m.mountPath === dir)?.name)?.hostPath?.path;
    const [init] = pod.initContainers as Container[];
    const [watch] = pod.containers as Container[];
    const flag = (c: Container, name: string) => c.args[c.args.indexOf(name) + 1]!;
    expect(hostPath(spec.volumes, step!, flag(step!, "--cni-bin-dir"))).toBe(
      hostPath(pod.volumes, init!, flag(init!, "--cni-bin-dir")),
    );
    expect(hostPath(spec.volumes, step!, flag(step!, "--cni-conf-dir"))).toBe(
      hostPath(pod.volumes, init!, flag(init!, "--cni-conf-dir")),
    );
    // Where the keeper's heartbeat is: the uninstall waits while a keeper runs.
    expect(hostPath(spec.volumes, step!, flag(step!, "--state-dir"))).toBe(
      hostPath(pod.volumes, watch!, flag(watch!, "--state-dir")),
    );
    expect(step!.securityContext.capabilities).toEqual({ drop: ["ALL"] });
    // It must start where pods cannot get a network (the conflist naming a missing plugin).
    expect(spec.hostNetwork).toBe(true);
  });
});

/** The Dockerfile's stages: name (or base image) and instructions, comments dropped. */
function stages(text: string): Array<{ from: string; name: string | undefined; steps: string[] }> {
  const out: Array<{ from: string; name: string | undefined; steps: string[] }> = [];
  for (const line of text.split("\n").filter((l) => l.trim() !== "" && !l.startsWith("#"))) {
    const from = /^FROM (\S+)(?: AS (\S+))?$/.exec(line);
    if (from) out.push({ from: from[1]!, name: from[2], steps: [] });
    // Before the first FROM: global ARGs.
    else out.at(-1)?.steps.push(line);
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
    // BuildKit and buildah set TARGETARCH; the classic builder does not (then amd64): declared before any FROM.
    expect(all.find((s) => s.name === "plugin")?.from).toBe("plugin-${TARGETARCH:-amd64}");
    expect(dockerfile.split("\n").find((l) => /^(ARG|FROM) /.test(l))).toBe("ARG TARGETARCH");
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
