// Builds client-js into dist/ (`npm run build`), or checks (`npm run check`) that the committed
// dist/ is exactly what the sources build to and that the browser bundle stays within budget.
//
// dist/ is committed: wsgate embeds the script build in its binary (GET /socket.io/socket.io.js),
// so `cargo build` must work on machines without Node.
import { build } from "esbuild";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { gzipSync } from "node:zlib";

const BUDGET = 4096; // bytes, minified + gzipped (socket.io-client: about 14 KB)
const here = path.dirname(new URL(import.meta.url).pathname);
const outputs = [
  // <script src="/socket.io/socket.io.js"> defines `io`, as the official bundle does.
  { outfile: "wsgate-client.js", format: "iife", minify: false },
  { outfile: "wsgate-client.min.js", format: "iife", minify: true },
  { outfile: "wsgate-client.esm.js", format: "esm", minify: true },
];

async function buildInto(dir) {
  for (const o of outputs) {
    await build({
      entryPoints: [path.join(here, "src/index.js")],
      bundle: true,
      outfile: path.join(dir, o.outfile),
      format: o.format,
      minify: o.minify,
      target: "es2020",
      legalComments: "none",
      // The IIFE exposes `io` itself, like the official script build.
      ...(o.format === "iife" ? { globalName: "__wsgate", footer: { js: "var io=__wsgate.io;" } } : {}),
      logLevel: "warning",
    });
  }
}

if (process.argv[2] === "--check") {
  const fresh = mkdtempSync(path.join(tmpdir(), "wsgate-client-"));
  try {
    await buildInto(fresh);
    let stale = [];
    for (const o of outputs) {
      const built = readFileSync(path.join(fresh, o.outfile));
      const committed = readFileSync(path.join(here, "dist", o.outfile));
      if (!built.equals(committed)) stale.push(o.outfile);
    }
    if (stale.length) {
      console.error(`client-js/dist is stale (${stale.join(", ")}): run 'npm run build' in client-js and commit dist/`);
      process.exit(1);
    }
    const size = gzipSync(readFileSync(path.join(here, "dist/wsgate-client.min.js")), { level: 9 }).length;
    console.log(`client-js: dist/ matches the sources; wsgate-client.min.js is ${size} bytes gzipped (budget ${BUDGET})`);
    if (size > BUDGET) {
      console.error(`client-js is over its budget: ${size} > ${BUDGET} bytes`);
      process.exit(1);
    }
  } finally {
    rmSync(fresh, { recursive: true, force: true });
  }
} else {
  await buildInto(path.join(here, process.argv[2] || "dist"));
}
