// The truth of `bench next-edits --language typescript`, from the TypeScript compiler API.
// Run by bench/next_edits_ts.py as `node ts_truth.js TYPESCRIPT_JS` with one JSON request on
// stdin and one JSON answer on stdout.
//
// {"phase": "targets", "root", "files"}: module-level functions (declarations and `const f =
// (...) =>`) whose name is declared once in the files and that are called from two files or
// more (the compiler's findReferences), each with its references and the edited texts of its
// file for the scripted changes.
// {"phase": "breaks", "root", "files", "cases": [{"path", "name", "edits": {kind: text}}]}:
// for each case and kind, the calls (by the compiler's references in the edited program) that
// no longer fit: the compiler reports an arity error (TS2554/TS2555) where it reported none,
// or an argument now reaches another parameter than before. Calls with a spread argument are
// left out (nothing certain can be said of them), as in the Python bench.
// Places are [path, row, code-point column], as in the CodeGraph.
"use strict";
const fs = require("fs");
const path = require("path");
const ts = require(process.argv[2]);

const ARITY = new Set([2554, 2555]);
const NEW_NAME = "Next";

function main() {
  const request = JSON.parse(fs.readFileSync(0, "utf8"));
  const texts = {};
  for (const rel of request.files) {
    texts[rel] = fs.readFileSync(path.join(request.root, rel), "utf8");
  }
  given = texts;
  const answer = request.phase === "targets" ? targets(request, texts) : breaks(request, texts);
  process.stdout.write(JSON.stringify(answer));
}

function service(root, texts) {
  const versions = {};
  const host = {
    getScriptFileNames: () => Object.keys(texts).map((rel) => path.join(root, rel)),
    getScriptVersion: (name) => String(versions[name] || 0),
    getScriptSnapshot: (name) => {
      const rel = path.relative(root, name);
      if (rel in texts) return ts.ScriptSnapshot.fromString(texts[rel]);
      return fs.existsSync(name) ? ts.ScriptSnapshot.fromString(fs.readFileSync(name, "utf8")) : undefined;
    },
    getCurrentDirectory: () => root,
    getCompilationSettings: () => ({
      target: ts.ScriptTarget.ES2022,
      module: ts.ModuleKind.ESNext,
      moduleResolution: ts.ModuleResolutionKind.Bundler,
      jsx: ts.JsxEmit.Preserve,
      strict: true,
      skipLibCheck: true,
      noEmit: true,
      allowImportingTsExtensions: true,
    }),
    getDefaultLibFileName: (options) => ts.getDefaultLibFilePath(options),
    fileExists: (name) => path.relative(root, name) in texts || fs.existsSync(name),
    readFile: (name) => texts[path.relative(root, name)] ?? fs.readFileSync(name, "utf8"),
  };
  const languageService = ts.createLanguageService(host, ts.createDocumentRegistry());
  return {
    ls: languageService,
    set(rel, text) {
      texts[rel] = text;
      const name = path.join(root, rel);
      versions[name] = (versions[name] || 0) + 1;
    },
  };
}

function place(root, file, offset) {
  const { line, character } = file.getLineAndCharacterOfPosition(offset);
  const lineStart = file.getPositionOfLineAndCharacter(line, 0);
  const column = [...file.text.slice(lineStart, lineStart + character)].length;
  return [path.relative(root, file.fileName), line, column];
}

function declaredNames(program, root, texts) {
  const counts = new Map();
  const count = (name) => counts.set(name, (counts.get(name) || 0) + 1);
  for (const file of program.getSourceFiles()) {
    if (!(path.relative(root, file.fileName) in texts)) continue; // not build/*.d.ts
    const visit = (node) => {
      const named =
        ts.isFunctionDeclaration(node) || ts.isMethodDeclaration(node) || ts.isMethodSignature(node) ||
        ts.isClassDeclaration(node) || ts.isPropertyDeclaration(node) || ts.isPropertySignature(node) ||
        (ts.isVariableDeclaration(node) && functionOf(node));
      if (named && node.name && ts.isIdentifier(node.name)) count(node.name.text);
      ts.forEachChild(node, visit);
    };
    visit(file);
  }
  return counts;
}

function functionOf(node) {
  if (ts.isFunctionDeclaration(node)) return node.body ? node : undefined;
  const value = node.initializer;
  return value && (ts.isArrowFunction(value) || ts.isFunctionExpression(value)) ? value : undefined;
}

function moduleFunctions(file) {
  const found = [];
  for (const statement of file.statements) {
    if (ts.isFunctionDeclaration(statement) && statement.name && statement.body) {
      found.push([statement.name, statement]);
    } else if (ts.isVariableStatement(statement)) {
      for (const declaration of statement.declarationList.declarations) {
        const fn = functionOf(declaration);
        if (fn && ts.isIdentifier(declaration.name)) found.push([declaration.name, fn]);
      }
    }
  }
  return found;
}

// The call whose callee is the name at `offset` (`f(...)`, `m.f(...)`), or undefined.
function callAt(file, offset) {
  let node = ts.getTokenAtPosition(file, offset);
  if (node.parent && ts.isPropertyAccessExpression(node.parent) && node.parent.name === node) {
    node = node.parent;
  }
  const call = node.parent;
  const isCall = call && (ts.isCallExpression(call) || ts.isNewExpression(call));
  return isCall && call.expression === node ? call : undefined;
}

// The files measured: those given (the CodeGraph's), not what resolution reaches beyond them.
let given = {};
function inRepository(root, fileName) {
  return path.relative(root, fileName) in given;
}

function references(ls, program, root, rel, offset) {
  const found = [];
  const declaration = path.join(root, rel);
  for (const symbol of ls.findReferences(declaration, offset) || []) {
    for (const ref of symbol.references) {
      if (ref.fileName === declaration && ref.textSpan.start === offset) continue;
      const file = program.getSourceFile(ref.fileName);
      if (!file || !inRepository(root, ref.fileName)) continue;
      const call = callAt(file, ref.textSpan.start);
      found.push({ file, offset: ref.textSpan.start, call });
    }
  }
  return found;
}

function edits(text, name, fn) {
  const params = fn.parameters;
  const required = params.filter((p) => !p.questionToken && !p.initializer && !p.dotDotDotToken);
  const rest = params.find((p) => p.dotDotDotToken);
  const open = params.pos; // just after "("
  const insert = (at, piece, before) =>
    text.slice(0, at) + (before ? piece + ", " : ", " + piece) + text.slice(at);
  const first = (piece) => text.slice(0, open) + piece + (params.length ? ", " : "") + text.slice(open);
  const last = required[required.length - 1];
  const plain = params.filter((p) => !p.dotDotDotToken);
  const lastPlain = plain[plain.length - 1];
  const needed = "extraParam: unknown";
  const optional = "extraParam: unknown = undefined";
  return {
    rename: text.slice(0, name.getStart()) + name.text + NEW_NAME + text.slice(name.end),
    "add-required": last ? insert(last.end, needed, false) : first(needed),
    "add-default": rest
      ? insert(rest.getStart(), optional, true)
      : lastPlain
        ? insert(lastPlain.end, optional, false)
        : first(optional),
  };
}

function targets(request, texts) {
  const { ls } = service(request.root, texts);
  const program = ls.getProgram();
  const names = declaredNames(program, request.root, texts);
  const found = [];
  for (const rel of Object.keys(texts).sort()) {
    const file = program.getSourceFile(path.join(request.root, rel));
    for (const [name, fn] of moduleFunctions(file)) {
      if (names.get(name.text) !== 1) continue;
      const refs = references(ls, program, request.root, rel, name.getStart());
      const callers = new Set(refs.filter((r) => r.call).map((r) => r.file.fileName));
      if (callers.size < 2) continue;
      found.push({
        path: rel,
        name: name.text,
        line: file.getLineAndCharacterOfPosition(name.getStart()).line,
        uses: refs.map((r) => place(request.root, r.file, r.offset)),
        edits: edits(file.text, name, fn),
      });
    }
  }
  return { typescript: ts.version, targets: found };
}

function calls(ls, program, root, rel, name) {
  const file = program.getSourceFile(path.join(root, rel));
  const declared = moduleFunctions(file).find(([n]) => n.text === name);
  const refs = references(ls, program, root, rel, declared[0].getStart());
  const fn = declared[1];
  return {
    params: fn.parameters.map((p) => (p.dotDotDotToken ? "..." : "") + p.name.getText(file)),
    calls: refs.filter((r) => r.call && !r.call.arguments?.some(ts.isSpreadElement)),
  };
}

// Is there an arity error whose innermost call is the call of `ref`?
function arityError(program, ref, cache) {
  const { file, call } = ref;
  if (!cache.has(file.fileName)) {
    const errors = program.getSemanticDiagnostics(file).filter((d) => ARITY.has(d.code));
    cache.set(file.fileName, errors);
  }
  return cache.get(file.fileName).some((d) => innermostCall(file, d.start) === call);
}

function innermostCall(file, offset) {
  let found;
  const visit = (node) => {
    if (offset < node.getStart(file) || offset >= node.end) return;
    if (ts.isCallExpression(node) || ts.isNewExpression(node)) found = node;
    ts.forEachChild(node, visit);
  };
  visit(file);
  return found;
}

function callPlace(root, ref) {
  return place(root, ref.file, ref.call.getStart(ref.file));
}

function receivers(params, count) {
  const restAt = params.findIndex((p) => p.startsWith("..."));
  const got = [];
  for (let i = 0; i < count; i++) {
    got.push(restAt >= 0 && i >= restAt ? params[restAt] : params[i]);
  }
  return got.join(",");
}

function breaks(request, texts) {
  const { ls, set } = service(request.root, texts);
  const before = ls.getProgram();
  const baseCache = new Map();
  const result = [];
  for (const item of request.cases) {
    const old = calls(ls, before, request.root, item.path, item.name);
    const wasBroken = new Set();
    for (const ref of old.calls) {
      if (arityError(before, ref, baseCache)) wasBroken.add(callPlace(request.root, ref).join(":"));
    }
    const kinds = {};
    for (const [kind, text] of Object.entries(item.edits)) {
      const original = texts[item.path];
      set(item.path, text);
      const program = ls.getProgram();
      const now = calls(ls, program, request.root, item.path, item.name);
      const cache = new Map();
      kinds[kind] = [];
      for (const ref of now.calls) {
        const where = callPlace(request.root, ref);
        if (wasBroken.has(where.join(":"))) continue; // broken before the change
        const count = ref.call.arguments ? ref.call.arguments.length : 0;
        const moved = receivers(old.params, count) !== receivers(now.params, count);
        if (arityError(program, ref, cache) || moved) kinds[kind].push(where);
      }
      set(item.path, original);
    }
    result.push(kinds);
  }
  return { typescript: ts.version, cases: result };
}

main();
