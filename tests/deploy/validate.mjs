// SPDX-License-Identifier: Apache-2.0
// Validates deploy/ offline against published schemas, in two passes:
//  1. Kubernetes manifests (*.yaml): the JSON-schema validators that kubernetes-models
//     generates from the Kubernetes OpenAPI document (and
//     @kubernetes-models/prometheus-operator from the CRDs): types, required fields,
//     enums, formats;
//  2. TypeScript's excess-property and type checks against the type declarations of the
//     same models, which catch what the OpenAPI schemas allow (unknown fields): a
//     misspelt `readinesProbe` is an error, as kubectl's strict field validation and
//     kubeconform -strict would make it; and Grafana dashboards (*.json) against
//     @grafana/schema's Dashboard type (the keys of an export, __inputs and __requires,
//     are left out; Grafana's string enums are accepted as their string values).
//
// Usage: node validate.mjs FILE.yaml... DASHBOARD.json...
// Prints one JSON object: {"documents": [{file, index, apiVersion, kind, name}],
// "errors": ["FILE#INDEX KIND/NAME: message", ...]}; exits 1 when there are errors.
// Kustomization files (kustomize.config.k8s.io) are listed but not validated here.

import { readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments } from "yaml";
import ts from "typescript";

const here = dirname(fileURLToPath(import.meta.url));

// apiVersion -> module folder of its models.
function modelModule(apiVersion, kind) {
  if (!/^[A-Za-z0-9]+$/.test(kind ?? "")) return null;
  if (apiVersion?.startsWith("monitoring.coreos.com/")) {
    return `@kubernetes-models/prometheus-operator/${apiVersion}/${kind}`;
  }
  if (!/^([a-z0-9.-]+\/)?v[0-9a-z]+$/.test(apiVersion ?? "")) return null;
  return `kubernetes-models/${apiVersion}/${kind}`;
}

const documents = [];
const errors = [];
const typed = []; // {label, module, kind, data}

for (const file of process.argv.slice(2)) {
  const text = readFileSync(file, "utf8");
  if (file.endsWith(".json")) {
    let data;
    try {
      data = JSON.parse(text);
    } catch (e) {
      errors.push(`${file}: JSON: ${e.message}`);
      continue;
    }
    const exported = Object.fromEntries(Object.entries(data).filter(([k]) => !k.startsWith("__")));
    documents.push({ file, index: 0, apiVersion: "grafana", kind: "Dashboard", name: data.title });
    typed.push({ label: `${file} Dashboard/${data.title}`, module: "@grafana/schema", kind: "Dashboard",
                 data: exported, loosen: true });
    continue;
  }
  const docs = parseAllDocuments(text, { uniqueKeys: true, prettyErrors: true, strict: true });
  let index = 0;
  for (const doc of docs) {
    const where = `${file}#${index}`;
    for (const e of [...doc.errors, ...doc.warnings]) errors.push(`${where}: YAML: ${e.message}`);
    const data = doc.toJS({ maxAliasCount: 0 });
    index += 1;
    if (data === null || data === undefined) continue; // an empty document (e.g. after a trailing ---)
    if (typeof data !== "object" || Array.isArray(data)) {
      errors.push(`${where}: not a mapping`);
      continue;
    }
    const { apiVersion, kind } = data;
    const name = data.metadata?.name;
    const label = `${where} ${kind}/${name}`;
    documents.push({ file, index: index - 1, apiVersion, kind, name });
    if (apiVersion?.startsWith("kustomize.config.k8s.io/")) continue;
    if (!name) errors.push(`${label}: metadata.name is missing`);
    const module = modelModule(apiVersion, kind);
    let Model;
    try {
      Model = module && (await import(module))[kind];
    } catch (e) {
      Model = undefined;
    }
    if (!Model) {
      errors.push(`${label}: no schema for apiVersion ${apiVersion}, kind ${kind}`);
      continue;
    }
    try {
      new Model(data).validate();
    } catch (e) {
      errors.push(`${label}: schema: ${e.message}`);
    }
    typed.push({ label, module, kind, data });
  }
}

// Pass 2: TypeScript. One virtual source file in this folder (so that node_modules
// here resolves), one typed constant per document.
if (typed.length) {
  const virtualName = join(here, "__manifests__.ts");
  const imports = [];
  const decls = [];
  const owners = []; // line ranges -> document label
  let line = 0;
  // Grafana's schema types use TypeScript string enums, which a JSON string literal does
  // not satisfy; Loosen<T> turns each enum into the union of its string values.
  imports.push(
    "type Loosen<T> = T extends string ? `${T}` : T extends ReadonlyArray<infer U> ? Array<Loosen<U>>" +
      " : T extends object ? { [K in keyof T]: Loosen<T[K]> } : T;",
  );
  typed.forEach((t, i) => {
    const name = t.module === "@grafana/schema" ? t.kind : `I${t.kind}`;
    imports.push(`import type { ${name} as T${i} } from ${JSON.stringify(t.module)};`);
  });
  line = imports.length;
  typed.forEach((t, i) => {
    const type = t.loosen ? `Loosen<T${i}>` : `T${i}`;
    const body = `const doc${i}: ${type} = ${JSON.stringify(t.data, null, 2)};`;
    const n = body.split("\n").length;
    owners.push({ from: line, to: line + n - 1, label: t.label });
    decls.push(body);
    line += n;
  });
  const source = imports.join("\n") + "\n" + decls.join("\n") + "\nexport {};\n";
  const options = {
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.ESNext,
    moduleResolution: ts.ModuleResolutionKind.Bundler,
    types: [],
    noUnusedLocals: false,
  };
  const host = ts.createCompilerHost(options);
  const getSourceFile = host.getSourceFile.bind(host);
  host.getSourceFile = (fileName, languageVersion, ...rest) =>
    resolve(fileName) === virtualName
      ? ts.createSourceFile(fileName, source, languageVersion, true)
      : getSourceFile(fileName, languageVersion, ...rest);
  const fileExists = host.fileExists.bind(host);
  host.fileExists = (fileName) => resolve(fileName) === virtualName || fileExists(fileName);
  const readFile = host.readFile.bind(host);
  host.readFile = (fileName) => (resolve(fileName) === virtualName ? source : readFile(fileName));
  const program = ts.createProgram([virtualName], options, host);
  for (const d of ts.getPreEmitDiagnostics(program)) {
    const message = ts.flattenDiagnosticMessageText(d.messageText, "\n  ");
    if (d.file && resolve(d.file.fileName) === virtualName && d.start !== undefined) {
      const { line: l } = d.file.getLineAndCharacterOfPosition(d.start);
      const owner = owners.find((o) => l >= o.from && l <= o.to);
      const snippet = source.split("\n")[l].trim();
      errors.push(`${owner ? owner.label : "manifests"}: type check: ${message} (at: ${snippet})`);
    } else {
      errors.push(`type check: ${message}`);
    }
  }
}

// The same mistake in many panels or containers is reported once, with its count.
const counts = new Map();
for (const e of errors) counts.set(e, (counts.get(e) ?? 0) + 1);
const unique = [...counts].map(([e, n]) => (n > 1 ? `${e} [${n} times]` : e));
process.stdout.write(JSON.stringify({ documents, errors: unique }, null, 1) + "\n");
process.exit(errors.length ? 1 : 0);
