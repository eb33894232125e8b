// A new release of the image for the upgrade test: the built OCI archive plus one layer whose /portmap-hostip
// is another executable, under another name. No builder needed.
import { createHash } from "node:crypto";
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { runOk } from "../exec.js";

interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

const sha256 = (data: Buffer) => `sha256:${createHash("sha256").update(data).digest("hex")}`;

/** Writes `workDir/image.tar`: the image of `archive` with `executable` as /portmap-hostip, named `name`. */
export async function imageWithExecutable(
  archive: string,
  executable: string,
  name: string,
  workDir: string,
): Promise<string> {
  const layout = join(workDir, "layout");
  const rootfs = join(workDir, "rootfs");
  mkdirSync(layout, { recursive: true });
  mkdirSync(rootfs, { recursive: true });
  await runOk("tar", ["-xf", archive, "-C", layout], { timeoutMs: 60_000 });
  const blobPath = (digest: string) => join(layout, "blobs", ...digest.split(":"));
  const readJson = <T>(digest: string) => JSON.parse(readFileSync(blobPath(digest), "utf8")) as T;
  const writeBlob = (mediaType: string, data: Buffer): Descriptor => {
    const digest = sha256(data);
    writeFileSync(blobPath(digest), data);
    return { mediaType, digest, size: data.length };
  };

  copyFileSync(executable, join(rootfs, "portmap-hostip"));
  const layerTar = join(workDir, "layer.tar");
  await runOk(
    "tar",
    [
      "--create",
      "--file",
      layerTar,
      "--owner=0",
      "--group=0",
      "--numeric-owner",
      "--mode=755",
      "-C",
      rootfs,
      "portmap-hostip",
    ],
    { timeoutMs: 60_000 },
  );
  const tar = readFileSync(layerTar);
  const layer = writeBlob("application/vnd.oci.image.layer.v1.tar", tar);

  const index = JSON.parse(readFileSync(join(layout, "index.json"), "utf8")) as { manifests: Descriptor[] };
  const manifest = readJson<{ config: Descriptor; layers: Descriptor[] }>(index.manifests[0]!.digest);
  const config = readJson<{ rootfs: { diff_ids: string[] }; history?: object[] }>(manifest.config.digest);
  config.rootfs.diff_ids.push(sha256(tar));
  config.history?.push({ created_by: "test: another executable", comment: name });
  const configDesc = writeBlob(manifest.config.mediaType, Buffer.from(JSON.stringify(config)));
  const manifestDesc = writeBlob(
    index.manifests[0]!.mediaType,
    Buffer.from(JSON.stringify({ ...manifest, config: configDesc, layers: [...manifest.layers, layer] })),
  );
  writeFileSync(
    join(layout, "index.json"),
    JSON.stringify({
      ...index,
      manifests: [{ ...manifestDesc, annotations: { "org.opencontainers.image.ref.name": name } }],
    }),
  );
  const out = join(workDir, "image.tar");
  await runOk("tar", ["--create", "--file", out, "-C", layout, "."], { timeoutMs: 60_000 });
  return out;
}
