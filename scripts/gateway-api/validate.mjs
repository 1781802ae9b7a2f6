// scripts/check-deploy: the Gateway API objects of a rendered overlay against the published
// schemas, as kubernetes-validate --strict checks the built-in kinds, offline.
//
//   node validate.mjs DIR OBJECTS.json
//
// DIR is where `npm ci` installed package.json beside this file (under target/). The models of
// @kubernetes-models/gateway-api are generated from the Gateway API's CRDs; each checks an
// object against its kind's OpenAPI schema (types, enums, patterns, lengths, required
// fields). That schema allows fields it does not know of (the API server prunes them), so,
// as --strict does for the built-in kinds, unknown fields are refused too: every object is
// written as a literal of its kind's declared type and TypeScript's excess-property check
// runs over them (tsc --noEmit). Prints one line per problem; exits 1 if there is any.
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [dir, file] = process.argv.slice(2);
const objects = JSON.parse(readFileSync(file, "utf8"));
const models = join(dir, "node_modules", "@kubernetes-models", "gateway-api");
let problems = 0;
const lines = [];

for (const [i, object] of objects.entries()) {
  const [group, version] = String(object.apiVersion).split("/");
  const what = `${object.kind}/${object.metadata?.name}`;
  const module = join(models, group, version ?? "", `${object.kind}.js`);
  let Model;
  try {
    Model = (await import(pathToFileURL(module)))[object.kind];
  } catch {
    console.log(`${file}: ${what}: no schema for ${object.apiVersion} ${object.kind}`);
    problems++;
    continue;
  }
  try {
    new Model(object).validate();
  } catch (e) {
    console.log(`${file}: ${what}: ${e.message}`);
    problems++;
  }
  const type = `@kubernetes-models/gateway-api/${group}/${version}/${object.kind}`;
  lines.push(`import type { I${object.kind} as T${i} } from "${type}";`);
  lines.push(`export const o${i}: T${i} = ${JSON.stringify(object)};`);
}

if (lines.length > 0) {
  // Written where the packages are, so that the imports resolve; one object per line.
  const source = join(dir, "objects.mts");
  writeFileSync(source, lines.join("\n") + "\n");
  const tsc = join(dir, "node_modules", "typescript", "bin", "tsc");
  try {
    execFileSync(process.execPath, [tsc, "--noEmit", "--strict", "--skipLibCheck",
      "--module", "nodenext", "--moduleResolution", "nodenext", source], { encoding: "utf8" });
  } catch (e) {
    for (const line of String(e.stdout).split("\n").filter((l) => l.trim())) {
      const at = /objects\.mts\((\d+),/.exec(line);
      const object = at ? objects[Math.floor((Number(at[1]) - 1) / 2)] : undefined;
      const what = object ? `${object.kind}/${object.metadata?.name}` : "?";
      console.log(`${file}: ${what}: ${line.replace(/^.*?error /, "")}`);
      problems++;
    }
  }
}
process.exit(problems > 0 ? 1 : 0);
