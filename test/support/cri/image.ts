// The pod sandbox image, built from source: a static pause program in one layer, packed as an OCI image
// layout tar whose index names it (io.containerd.image.name) for `ctr images import`. No registry involved.
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { runOk } from "../exec.js";
import { REPO_ROOT } from "../paths.js";

export const PAUSE_IMAGE = "pmh.local/pause:e2e";

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

/** Builds the image in `workDir` and returns the path of its OCI layout tar. */
export async function buildPauseImage(workDir: string): Promise<string> {
  const rootfs = join(workDir, "rootfs");
  const layout = join(workDir, "layout");
  const blobs = join(layout, "blobs", "sha256");
  mkdirSync(rootfs, { recursive: true });
  mkdirSync(blobs, { recursive: true });
  await runOk(
    "gcc",
    ["-static", "-Os", "-s", "-o", join(rootfs, "pause"), join(REPO_ROOT, "test/support/cri/pause.c")],
    { timeoutMs: 60_000 },
  );
  const layerTar = join(workDir, "layer.tar");
  await runOk(
    "tar",
    ["--create", "--file", layerTar, "--owner=0", "--group=0", "--numeric-owner", "--mtime=@0", "-C", rootfs, "pause"],
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
        config: { Entrypoint: ["/pause"] },
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
    manifests: [{ ...manifest, annotations: { "io.containerd.image.name": PAUSE_IMAGE } }],
  };
  writeFileSync(join(layout, "index.json"), JSON.stringify(index));
  writeFileSync(join(layout, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }));
  const image = join(workDir, "pause-image.tar");
  await runOk("tar", ["--create", "--file", image, "-C", layout, "oci-layout", "index.json", "blobs"], {
    timeoutMs: 30_000,
  });
  return image;
}
