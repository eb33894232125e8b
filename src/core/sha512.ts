// SHA-512 (FIPS 180-4) of a string's UTF-8 bytes, in plain JS: portmap names each pod's chain after one, and
// loading node:crypto for it costs a hostPort ADD more (~3.5 ms under Node 20, ~5 ms under Node 24) than this
// takes. Each 64-bit word is two 32-bit halves (hi, lo) in an Int32Array, whose stores wrap modulo 2^32.

// Round constants and initial hash value: the first 64 bits of the fractional parts of the cube roots of the
// first 80 primes and of the square roots of the first 8.
const K_HEX = `
428a2f98d728ae22 7137449123ef65cd b5c0fbcfec4d3b2f e9b5dba58189dbbc 3956c25bf348b538 59f111f1b605d019
923f82a4af194f9b ab1c5ed5da6d8118 d807aa98a3030242 12835b0145706fbe 243185be4ee4b28c 550c7dc3d5ffb4e2
72be5d74f27b896f 80deb1fe3b1696b1 9bdc06a725c71235 c19bf174cf692694 e49b69c19ef14ad2 efbe4786384f25e3
0fc19dc68b8cd5b5 240ca1cc77ac9c65 2de92c6f592b0275 4a7484aa6ea6e483 5cb0a9dcbd41fbd4 76f988da831153b5
983e5152ee66dfab a831c66d2db43210 b00327c898fb213f bf597fc7beef0ee4 c6e00bf33da88fc2 d5a79147930aa725
06ca6351e003826f 142929670a0e6e70 27b70a8546d22ffc 2e1b21385c26c926 4d2c6dfc5ac42aed 53380d139d95b3df
650a73548baf63de 766a0abb3c77b2a8 81c2c92e47edaee6 92722c851482353b a2bfe8a14cf10364 a81a664bbc423001
c24b8b70d0f89791 c76c51a30654be30 d192e819d6ef5218 d69906245565a910 f40e35855771202a 106aa07032bbd1b8
19a4c116b8d2d0c8 1e376c085141ab53 2748774cdf8eeb99 34b0bcb5e19b48a8 391c0cb3c5c95a63 4ed8aa4ae3418acb
5b9cca4f7763e373 682e6ff3d6b2b8a3 748f82ee5defb2fc 78a5636f43172f60 84c87814a1f0ab72 8cc702081a6439ec
90befffa23631e28 a4506cebde82bde9 bef9a3f7b2c67915 c67178f2e372532b ca273eceea26619c d186b8c721c0c207
eada7dd6cde0eb1e f57d4f7fee6ed178 06f067aa72176fba 0a637dc5a2c898a6 113f9804bef90dae 1b710b35131c471b
28db77f523047d84 32caab7b40c72493 3c9ebe0a15c9bebc 431d67c49c100d4c 4cc5d4becb3e42b6 597f299cfc657e2a
5fcb6fab3ad6faec 6c44198c4a475817`;
const H_HEX = `
6a09e667f3bcc908 bb67ae8584caa73b 3c6ef372fe94f82b a54ff53a5f1d36f1 510e527fade682d1 9b05688c2b3e6c1f
1f83d9abfb41bd6b 5be0cd19137e2179`;

/** Each 64-bit hex word as two 32-bit halves, high first. */
const halves = (hex: string): Int32Array =>
  Int32Array.from(
    hex
      .trim()
      .split(/\s+/)
      .flatMap((w) => [Number.parseInt(w.slice(0, 8), 16), Number.parseInt(w.slice(8), 16)]),
  );
const K = halves(K_HEX);
const H = halves(H_HEX);
const TWO32 = 0x100000000;

/** The hash as 128 lowercase hex digits, as `createHash("sha512").update(text).digest("hex")`. */
export function sha512Hex(text: string): string {
  const data = new TextEncoder().encode(text);
  // Padding: 0x80, zeros, then the length in bits as a 128-bit big-endian number, to a multiple of 128 bytes.
  const size = Math.ceil((data.length + 17) / 128) * 128;
  const bytes = new Uint8Array(size);
  bytes.set(data);
  bytes[data.length] = 0x80;
  const view = new DataView(bytes.buffer);
  view.setUint32(size - 8, Math.floor((data.length * 8) / TWO32));
  view.setUint32(size - 4, (data.length * 8) >>> 0);
  const h = H.slice();
  const w = new Int32Array(160);
  const v = new Int32Array(16);
  for (let block = 0; block < size; block += 128) {
    for (let i = 0; i < 32; i++) w[i] = view.getInt32(block + 4 * i);
    for (let i = 32; i < 160; i += 2) {
      let xh = w[i - 30] as number;
      let xl = w[i - 29] as number;
      // σ0 = rotr 1 ^ rotr 8 ^ shr 7
      const s0h = ((xh >>> 1) | (xl << 31)) ^ ((xh >>> 8) | (xl << 24)) ^ (xh >>> 7);
      const s0l = ((xl >>> 1) | (xh << 31)) ^ ((xl >>> 8) | (xh << 24)) ^ ((xl >>> 7) | (xh << 25));
      xh = w[i - 4] as number;
      xl = w[i - 3] as number;
      // σ1 = rotr 19 ^ rotr 61 ^ shr 6
      const s1h = ((xh >>> 19) | (xl << 13)) ^ ((xl >>> 29) | (xh << 3)) ^ (xh >>> 6);
      const s1l = ((xl >>> 19) | (xh << 13)) ^ ((xh >>> 29) | (xl << 3)) ^ ((xl >>> 6) | (xh << 26));
      const lo = (s1l >>> 0) + ((w[i - 13] as number) >>> 0) + (s0l >>> 0) + ((w[i - 31] as number) >>> 0);
      w[i] = s1h + (w[i - 14] as number) + s0h + (w[i - 32] as number) + Math.floor(lo / TWO32);
      w[i + 1] = lo;
    }
    v.set(h);
    for (let t = 0; t < 160; t += 2) {
      // a..h of this round, each as (hi, lo).
      const ah = v[0] as number;
      const al = v[1] as number;
      const bh = v[2] as number;
      const bl = v[3] as number;
      const ch = v[4] as number;
      const cl = v[5] as number;
      const dh = v[6] as number;
      const dl = v[7] as number;
      const eh = v[8] as number;
      const el = v[9] as number;
      const fh = v[10] as number;
      const fl = v[11] as number;
      const gh = v[12] as number;
      const gl = v[13] as number;
      const hh = v[14] as number;
      const hl = v[15] as number;
      // Σ1(e) = rotr 14 ^ rotr 18 ^ rotr 41; ch(e, f, g)
      const e1h = ((eh >>> 14) | (el << 18)) ^ ((eh >>> 18) | (el << 14)) ^ ((el >>> 9) | (eh << 23));
      const e1l = ((el >>> 14) | (eh << 18)) ^ ((el >>> 18) | (eh << 14)) ^ ((eh >>> 9) | (el << 23));
      const t1l =
        (hl >>> 0) +
        (e1l >>> 0) +
        (((el & fl) ^ (~el & gl)) >>> 0) +
        ((K[t + 1] as number) >>> 0) +
        ((w[t + 1] as number) >>> 0);
      const t1h = hh + e1h + ((eh & fh) ^ (~eh & gh)) + (K[t] as number) + (w[t] as number) + Math.floor(t1l / TWO32);
      // Σ0(a) = rotr 28 ^ rotr 34 ^ rotr 39; maj(a, b, c)
      const a0h = ((ah >>> 28) | (al << 4)) ^ ((al >>> 2) | (ah << 30)) ^ ((al >>> 7) | (ah << 25));
      const a0l = ((al >>> 28) | (ah << 4)) ^ ((ah >>> 2) | (al << 30)) ^ ((ah >>> 7) | (al << 25));
      const t2l = (a0l >>> 0) + (((al & bl) ^ (al & cl) ^ (bl & cl)) >>> 0);
      const t2h = a0h + ((ah & bh) ^ (ah & ch) ^ (bh & ch)) + Math.floor(t2l / TWO32);
      v.copyWithin(2, 0, 14);
      const el2 = (dl >>> 0) + (t1l >>> 0);
      v[8] = dh + t1h + Math.floor(el2 / TWO32);
      v[9] = el2;
      const al2 = (t1l >>> 0) + (t2l >>> 0);
      v[0] = t1h + t2h + Math.floor(al2 / TWO32);
      v[1] = al2;
    }
    for (let i = 0; i < 16; i += 2) {
      const lo = ((h[i + 1] as number) >>> 0) + ((v[i + 1] as number) >>> 0);
      h[i] = (h[i] as number) + (v[i] as number) + Math.floor(lo / TWO32);
      h[i + 1] = lo;
    }
  }
  return Array.from(h, (x) => (x >>> 0).toString(16).padStart(8, "0")).join("");
}
