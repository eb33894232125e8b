// The names of the bench's measurements (keys of results.json, rows of the tables).
export const M = {
  floor: "node -e 0",
  floor24: "node24 -e 0",
  portmapAdd: "portmap ADD",
  bundleAdd: "bundle ADD",
  seaAdd: "SEA ADD",
  seaAddBuilt: "SEA ADD (dist/, as built)",
  bundleVersion: "bundle VERSION",
  seaVersion: "SEA VERSION",
  portmapDel: "portmap DEL",
  listChain: "iptables -S <chain>",
  restoreChain: "iptables-restore <chain>",
  ipAddr: "ip -j address show",
  nftList: "nft list chain",
} as const;
