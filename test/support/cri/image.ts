// Images built from source: static C programs in one layer, packed as an OCI image layout tar whose index names
// it (io.containerd.image.name) for `ctr images import`. No registry involved. The pod sandbox image holds the
// pause program; the cluster tests' pods run the echo server (test/support/cluster/echo.c).
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import { gzipSync } from "node:zlib";
import { runOk } from "../exec.js";
import { REPO_ROOT } from "../paths.js";

export const PAUSE_IMAGE = "pmh.local/pause:e2e";
export const ECHO_IMAGE = "pmh.local/echo:e2e";

const MEDIA = {
  manifest: "application/vnd.oci.image.manifest.v1+json",
  config: "application/vnd.oci.image.config.v1+json",
  layer: "application/vnd.oci.image.layer.v1.tar+gzip",
};

interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
}

// OCI names the CPU as Go does.
const ARCH = process.arch === "x64" ? "amd64" : process.arch;

const sha256 = (data: Buffer) => `sha256:${createHash("sha256").update(data).digest("hex")}`;

/** Builds the pod sandbox image in `workDir` and returns the path of its OCI layout tar. */
export function buildPauseImage(workDir: string): Promise<string> {
  return buildProgramImage(workDir, PAUSE_IMAGE, "test/support/cri/pause.c");
}

/** Builds the echo server's image (entrypoint /echo) in `workDir` and returns the path of its OCI layout tar. */
export function buildEchoImage(workDir: string): Promise<string> {
  return buildProgramImage(workDir, ECHO_IMAGE, "test/support/cluster/echo.c");
}

/** An image named `name` whose only file is the static program built from `source`, also its entrypoint. */
async function buildProgramImage(workDir: string, name: string, source: string): Promise<string> {
  const program = basename(source, ".c");
  const rootfs = join(workDir, "rootfs");
  const layout = join(workDir, "layout");
  const blobs = join(layout, "blobs", "sha256");
  mkdirSync(rootfs, { recursive: true });
  mkdirSync(blobs, { recursive: true });
  await runOk("gcc", ["-static", "-Os", "-s", "-o", join(rootfs, program), join(REPO_ROOT, source)], {
    timeoutMs: 60_000,
  });
  const layerTar = join(workDir, "layer.tar");
  await runOk(
    "tar",
    ["--create", "--file", layerTar, "--owner=0", "--group=0", "--numeric-owner", "--mtime=@0", "-C", rootfs, program],
    { timeoutMs: 30_000 },
  );

  const blob = (mediaType: string, data: Buffer): Descriptor => {
    const digest = sha256(data);
    writeFileSync(join(blobs, digest.slice("sha256:".length)), data);
    return { mediaType, digest, size: data.length };
  };
  const tar = readFileSync(layerTar);
  const layer = blob(MEDIA.layer, gzipSync(tar));
  const config = blob(
    MEDIA.config,
    Buffer.from(
      JSON.stringify({
        architecture: ARCH,
        os: "linux",
        config: { Entrypoint: [`/${program}`] },
        rootfs: { type: "layers", diff_ids: [sha256(tar)] },
      }),
    ),
  );
  const manifest = blob(
    MEDIA.manifest,
    Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MEDIA.manifest, config, layers: [layer] })),
  );
  const index = {
    schemaVersion: 2,
    manifests: [{ ...manifest, annotations: { "io.containerd.image.name": name } }],
  };
  writeFileSync(join(layout, "index.json"), JSON.stringify(index));
  writeFileSync(join(layout, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }));
  const image = join(workDir, `${program}-image.tar`);
  await runOk("tar", ["--create", "--file", image, "-C", layout, "oci-layout", "index.json", "blobs"], {
    timeoutMs: 30_000,
  });
  return image;
}
