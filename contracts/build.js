// Standard-JSON compile of the escrow contracts; see build.sh.
"use strict";
const fs = require("fs");
const path = require("path");
const [solcPath, nodeModules, srcDir, outDir] = process.argv.slice(2);
// RAPHA_SOLCJS names the package's CLI script; the library is its package directory.
const solc = require(path.dirname(solcPath));

const CONTRACTS = ["RaphaEscrow", "MockUSDC"];
const sources = {};
for (const name of CONTRACTS) {
  sources[`${name}.sol`] = { content: fs.readFileSync(path.join(srcDir, `${name}.sol`), "utf8") };
}
const input = {
  language: "Solidity",
  sources,
  settings: {
    optimizer: { enabled: true, runs: 200 },
    viaIR: true,
    evmVersion: "cancun",
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
  },
};
function findImports(p) {
  if (!p.startsWith("@openzeppelin/contracts/")) return { error: `import outside OpenZeppelin: ${p}` };
  try {
    return { contents: fs.readFileSync(path.join(nodeModules, p), "utf8") };
  } catch (e) {
    return { error: `${p}: ${e.message}` };
  }
}
const out = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
let failed = false;
for (const e of out.errors || []) {
  // OpenZeppelin's own transient-storage notice is about its guard, which clears its slot.
  const file = e.sourceLocation && e.sourceLocation.file;
  if (e.severity !== "error" && file && file.startsWith("@openzeppelin/")) continue;
  process.stderr.write(e.formattedMessage + "\n");
  if (e.severity === "error") failed = true;
}
if (failed) process.exit(1);
for (const name of CONTRACTS) {
  const c = out.contracts[`${name}.sol`][name];
  const artifact = {
    contractName: name,
    compiler: `solc ${solc.version()}`,
    settings: { optimizer: input.settings.optimizer, viaIR: true, evmVersion: input.settings.evmVersion },
    abi: c.abi,
    bytecode: "0x" + c.evm.bytecode.object,
    deployedBytecode: "0x" + c.evm.deployedBytecode.object,
  };
  fs.writeFileSync(path.join(outDir, `${name}.json`), JSON.stringify(artifact, null, 2) + "\n");
  process.stdout.write(`${name}: ${c.evm.deployedBytecode.object.length / 2} bytes runtime\n`);
}
