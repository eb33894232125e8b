// The DaemonSet and its image must agree with the installer's flags and the release they ship.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { STANDARD } from "../../src/install/files.js";
import { parseInstallArgs } from "../../src/cli/install.js";

const ROOT = join(import.meta.dirname, "../..");
const { version } = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8"));
const dockerfile = readFileSync(join(ROOT, "deploy/Dockerfile"), "utf8");
const manifest = parse(readFileSync(join(ROOT, "deploy/daemonset.yaml"), "utf8"));
const pod = manifest.spec.template.spec;

interface Container {
  name: string;
  image: string;
  args: string[];
  securityContext: { privileged?: boolean };
  volumeMounts: Array<{ name: string; mountPath: string; readOnly?: boolean }>;
}

describe("deploy/daemonset.yaml", () => {
  it("is a node-critical DaemonSet in kube-system that runs everywhere and needs no API access", () => {
    expect(manifest).toMatchObject({ apiVersion: "apps/v1", kind: "DaemonSet", metadata: { namespace: "kube-system" } });
    expect(manifest.spec.selector.matchLabels).toEqual(manifest.spec.template.metadata.labels);
    expect(pod.priorityClassName).toBe("system-node-critical");
    expect(pod.tolerations).toEqual([{ operator: "Exists" }]);
    expect(pod.automountServiceAccountToken).toBe(false);
    expect(pod.hostNetwork).toBeUndefined();
  });

  it("installs in a privileged init container and keeps the entry with a privileged --watch container", () => {
    const [init] = pod.initContainers as Container[];
    const [watch] = pod.containers as Container[];
    expect([init?.args[0], parseInstallArgs(init!.args.slice(1)).mode]).toEqual(["install", "install"]);
    expect([watch?.args[0], parseInstallArgs(watch!.args.slice(1)).mode]).toEqual(["install", "watch"]);
    for (const container of [init!, watch!]) expect(container.securityContext.privileged).toBe(true);
  });

  it("points --cni-bin-dir and --cni-conf-dir at writable mounts of the node's CNI directories", () => {
    const hostPaths = new Map<string, string>(
      (pod.volumes as Array<{ name: string; hostPath: { path: string } }>).map((volume) => [volume.name, volume.hostPath.path]),
    );
    for (const container of [...pod.initContainers, ...pod.containers] as Container[]) {
      const options = parseInstallArgs(container.args.slice(1));
      const hostPathOf = (dir: string | undefined): string | undefined => {
        const mount = container.volumeMounts.find((m) => m.mountPath === dir);
        expect(mount?.readOnly, `${container.name} mount of ${dir}`).toBeFalsy();
        return mount && hostPaths.get(mount.name);
      };
      expect(hostPathOf(options.cniBinDir), container.name).toBe(STANDARD.binDir);
      expect(hostPathOf(options.cniConfDir), container.name).toBe(STANDARD.confDir);
    }
  });

  it("runs this release's image, whose entrypoint is the single executable", () => {
    for (const container of [...pod.initContainers, ...pod.containers] as Container[]) {
      expect(container.image).toBe(`portmap-hostip:${version}`);
    }
    const copied = /^COPY dist\/portmap-hostip-linux-x64 (\S+)$/m.exec(dockerfile)?.[1];
    expect(copied).toBeDefined();
    expect(dockerfile).toMatch(new RegExp(`^ENTRYPOINT \\["${copied}"\\]$`, "m"));
    expect(dockerfile).toContain(`-t portmap-hostip:${version} .`);
  });
});
