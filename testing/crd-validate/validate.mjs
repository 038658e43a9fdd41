// Validates Prometheus Operator objects (ServiceMonitor, PrometheusRule, ...) as an API server
// with the operator's CRDs installed would, for tests/test_deploy_kubernetes.py.
//
// @kubernetes-models/prometheus-operator is generated from the operator's API types, the
// same types its CRDs are generated from. Its JSON schemas check types, required fields,
// enums and patterns, but let any unknown field through, which the API server rejects under
// kubectl's strict field validation (a misspelt field would otherwise be dropped silently).
// So each object is also type-checked by TypeScript against the same package's interfaces:
// an object literal with a property its interface lacks is an error.
//
// Input on stdin: a JSON array of objects. Output on stdout: a JSON array holding, for each
// object, the list of its errors ("field.path: message"); empty when it is valid. Exits
// non-zero only when it cannot validate at all.

import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const PACKAGE = "@kubernetes-models/prometheus-operator";
const GROUP = "monitoring.coreos.com";
const TSC = fileURLToPath(new URL("./node_modules/typescript/bin/tsc", import.meta.url));
const TSC_TIMEOUT_MS = 60_000;
const HEADER_LINES = 2; // the import and the declaration, before the object's first line

/** The model class of an object's kind, and the path of its module, or an error. */
async function modelOf(object) {
  const [group, version] = String(object?.apiVersion ?? "").split("/");
  const kind = String(object?.kind ?? "");
  if (group !== GROUP || !/^v\d+(?:(?:alpha|beta)\d+)?$/.test(version ?? "")) {
    return { error: `apiVersion ${object?.apiVersion} is not ${GROUP}'s` };
  }
  if (!/^[A-Z][A-Za-z0-9]*$/.test(kind)) return { error: `kind ${kind} is not a kind` };
  const specifier = `${PACKAGE}/${GROUP}/${version}/${kind}`;
  try {
    const module = await import(specifier);
    if (typeof module[kind] === "function") {
      return { Model: module[kind], path: fileURLToPath(import.meta.resolve(specifier)) };
    }
  } catch (error) {
    if (error?.code !== "ERR_MODULE_NOT_FOUND" && error?.code !== "ERR_PACKAGE_PATH_NOT_EXPORTED") {
      throw error;
    }
  }
  return { error: `${PACKAGE} has no ${object.apiVersion} ${kind}` };
}

/** The JSON schema errors of an object, as "field.path: message". */
function schemaErrors(Model, object) {
  try {
    new Model(object).validate();
    return [];
  } catch (error) {
    if (!Array.isArray(error?.errors)) throw error;
    const messages = error.errors.map((e) => {
      const path = e.instancePath
        .split("/")
        .slice(1)
        .map((key) => key.replaceAll("~1", "/").replaceAll("~0", "~"))
        .reduce((at, key) => (/^\d+$/.test(key) ? `${at}[${key}]` : at ? `${at}.${key}` : key), "");
      const detail = e.params?.allowedValues ? ` (${e.params.allowedValues.join(", ")})` : "";
      return `${path || "(object)"}: ${e.message}${detail}`;
    });
    return [...new Set(messages)];
  }
}

/** The object as a TypeScript literal, one property or item a line, and each line's field. */
function literal(value) {
  const lines = [];
  const fields = [];
  const emit = (item, field, depth, prefix, suffix) => {
    const pad = "  ".repeat(depth);
    if (item === null || typeof item !== "object") {
      lines.push(`${pad}${prefix}${JSON.stringify(item)}${suffix}`);
      fields.push(field);
      return;
    }
    const array = Array.isArray(item);
    lines.push(`${pad}${prefix}${array ? "[" : "{"}`);
    fields.push(field);
    for (const [key, child] of array ? item.entries() : Object.entries(item)) {
      const path = array ? `${field}[${key}]` : field ? `${field}.${key}` : key;
      emit(child, path, depth + 1, array ? "" : `${JSON.stringify(key)}: `, ",");
    }
    lines.push(`${pad}${array ? "]" : "}"}${suffix}`);
    fields.push(field);
  };
  emit(value, "", 0, "", ";");
  return { text: lines.join("\n"), fields };
}

/** TypeScript's errors for each object (by index), checked against its model's interface. */
function typeErrors(checked) {
  const errors = new Map(checked.map(({ index }) => [index, []]));
  if (checked.length === 0) return errors;
  const directory = mkdtempSync(join(tmpdir(), "crd-validate-"));
  try {
    const fieldsOf = new Map();
    for (const { index, object, path } of checked) {
      const { text, fields } = literal(object);
      const type = `I${object.kind}`;
      writeFileSync(
        join(directory, `object${index}.ts`),
        `import type { ${type} } from ${JSON.stringify(path)};\n` +
          `export const object: ${type} =\n${text}\n`,
      );
      fieldsOf.set(`object${index}.ts`, { index, fields });
    }
    const compilerOptions = {
      strict: true,
      noEmit: true,
      module: "nodenext",
      moduleResolution: "nodenext",
      target: "es2022",
      skipLibCheck: true,
      types: [],
      noErrorTruncation: true,
    };
    writeFileSync(
      join(directory, "tsconfig.json"),
      JSON.stringify({ compilerOptions, files: [...fieldsOf.keys()] }),
    );
    const run = spawnSync(process.execPath, [TSC, "-p", directory, "--pretty", "false"], {
      encoding: "utf8",
      timeout: TSC_TIMEOUT_MS,
    });
    if (run.error) throw run.error;
    let last = null;
    const unplaced = [];
    for (const line of run.stdout.split("\n")) {
      const found = /^(?:.*[\\/])?([^\\/(]+)\((\d+),(\d+)\): error TS\d+: (.*)$/.exec(line);
      if (found && fieldsOf.has(found[1])) {
        const { index, fields } = fieldsOf.get(found[1]);
        const field = fields[Number(found[2]) - 1 - HEADER_LINES] || "(object)";
        last = errors.get(index);
        last.push(`${field}: ${found[4]}`);
      } else if (last && /^\s+\S/.test(line)) {
        last[last.length - 1] += ` ${line.trim()}`;
      } else if (line.trim()) {
        unplaced.push(line);
      }
    }
    if (unplaced.length > 0 || (run.status !== 0 && [...errors.values()].every((e) => !e.length))) {
      throw new Error(`tsc exited ${run.status}:\n${unplaced.join("\n")}\n${run.stderr}`);
    }
    return errors;
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
}

const objects = JSON.parse(readFileSync(0, "utf8"));
if (!Array.isArray(objects)) throw new Error("expected a JSON array of objects");
const results = [];
const checked = [];
for (const [index, object] of objects.entries()) {
  const { Model, path, error } = await modelOf(object);
  if (error) {
    results.push([error]);
    continue;
  }
  results.push(schemaErrors(Model, object));
  checked.push({ index, object, path });
}
for (const [index, errors] of typeErrors(checked)) results[index].push(...errors);
process.stdout.write(JSON.stringify(results));
