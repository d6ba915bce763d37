// codeagent for VS Code: starts `codeagent-lsp` over stdio and lets vscode-languageclient do the
// protocol. This file adds what the generic client lacks: the settings handed over at start, a
// status bar item (model, device, last latency from `codeagent/stats`) and one command per code
// action. Accepting a suggestion runs its `codeagent.accepted` command, which vscode-languageclient
// forwards to the server (workspace/executeCommand): the server then prefetches the next one.
import * as vscode from "vscode";
import {
  CodeAction,
  CodeActionRequest,
  CodeActionResolveRequest,
  CodeActionTriggerKind,
  LanguageClient,
  TransportKind,
} from "vscode-languageclient/node";

const LANGUAGES = [
  "python", "javascript", "javascriptreact", "typescript", "typescriptreact", "go", "rust", "java",
  "c", "cpp",
];
const SERVER_SECTION = "codeagent"; // the server's own settings, generated from settings.py
const EDITOR_SECTION = "codeagent-lsp"; // how VS Code starts it; never sent to the server
const STATS = "codeagent/stats";
const FOCUS = "codeagent/didFocus";
const FOCUS_DELAY_MS = 300;

// Each command picks the server's action by the `action` tag it puts in `data`
// (codeagent_lsp/features/actions.py): titles carry names and messages, the tag does not.
const ACTIONS: Record<string, { tag: string; label: string }> = {
  "codeagent.explain": { tag: "explain", label: "Explain this code" },
  "codeagent.addDocstring": { tag: "docstring", label: "Add docstring" },
  "codeagent.generateTests": { tag: "tests", label: "Generate tests" },
  "codeagent.fix": { tag: "fix", label: "Fix" },
};

interface RequestRecord {
  promptTokens: number;
  reusedTokens: number;
  evaluatedTokens: number;
  ttftMs: number;
  totalMs: number;
  outcome: string;
}

interface Stats {
  model: { name: string; device: string; template: string } | null;
  problem?: string | null;
  records: RequestRecord[];
}

let client: LanguageClient | undefined;
let status: StatusBar | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  status = new StatusBar();
  context.subscriptions.push(status);
  for (const [command, action] of Object.entries(ACTIONS)) {
    context.subscriptions.push(
      vscode.commands.registerCommand(command, () => runAction(action.tag, action.label)),
    );
  }
  context.subscriptions.push(
    vscode.commands.registerCommand("codeagent.showStats", showStats),
    vscode.commands.registerCommand("codeagent.restart", restart),
    vscode.window.onDidChangeActiveTextEditor(focus),
    vscode.window.onDidChangeTextEditorSelection((event) => focusSoon(event.textEditor)),
    vscode.window.onDidChangeTextEditorVisibleRanges((event) => focusSoon(event.textEditor)),
  );
  await start();
}

export async function deactivate(): Promise<void> {
  await client?.stop();
}

async function start(): Promise<void> {
  const editor = vscode.workspace.getConfiguration(EDITOR_SECTION);
  client = new LanguageClient(
    "codeagent",
    "codeagent",
    {
      command: editor.get<string>("serverPath", "codeagent-lsp"),
      args: editor.get<string[]>("serverArgs", []),
      transport: TransportKind.stdio,
    },
    {
      documentSelector: LANGUAGES.map((language) => ({ scheme: "file", language })),
      initializationOptions: serverSettings(),
      // Pushes `codeagent.*` on change; workspace/configuration is answered from the same section.
      synchronize: { configurationSection: SERVER_SECTION },
      middleware: {
        provideInlineCompletionItems: async (document, position, context, token, next) =>
          afterCompletion(await next(document, position, context, token)),
        provideCompletionItem: async (document, position, context, token, next) =>
          afterCompletion(await next(document, position, context, token)),
      },
    },
  );
  client.registerProposedFeatures(); // inline completion (ghost text) on every client version
  await client.start();
  focus(vscode.window.activeTextEditor);
  status?.watch(editor.get<number>("statusRefreshSeconds", 10));
}

/** Tells the server where the cursor settled (`codeagent/didFocus`): it computes the
 * suggestion there in the background, so the first request there answers from it. */
function focus(editor: vscode.TextEditor | undefined): void {
  if (!editor || !client?.isRunning() || !LANGUAGES.includes(editor.document.languageId)) {
    return;
  }
  const converter = client.code2ProtocolConverter;
  void client.sendNotification(FOCUS, {
    textDocument: { uri: converter.asUri(editor.document.uri) },
    position: converter.asPosition(editor.selection.active),
  });
}

let focusTimer: NodeJS.Timeout | undefined;

/** Selections change on every keystroke: tell the server once the cursor rests. */
function focusSoon(editor: vscode.TextEditor): void {
  clearTimeout(focusTimer);
  focusTimer = setTimeout(() => focus(editor), FOCUS_DELAY_MS);
}

async function restart(): Promise<void> {
  await client?.stop();
  await start();
}

/** `codeagent.*` as a plain nested object, the shape the server's settings tree reads. */
function serverSettings(): object {
  return JSON.parse(JSON.stringify(vscode.workspace.getConfiguration().get(SERVER_SECTION) ?? {}));
}

function afterCompletion<T>(result: T): T {
  void status?.refresh();
  return result;
}

async function stats(): Promise<Stats | undefined> {
  if (!client?.isRunning()) {
    return undefined;
  }
  return client.sendRequest<Stats>(STATS);
}

async function showStats(): Promise<void> {
  const content = JSON.stringify(await stats(), null, 2);
  const document = await vscode.workspace.openTextDocument({ language: "json", content });
  await vscode.window.showTextDocument(document, { preview: true });
}

/** Asks the server for its code actions at the cursor (or selection), resolves the one tagged
 * `tag` (the model runs then, with a progress notification) and applies its edit. Explanations
 * arrive as a Markdown document the server opens with window/showDocument. */
async function runAction(tag: string, label: string): Promise<void> {
  const editor = vscode.window.activeTextEditor;
  if (!client?.isRunning() || !editor) {
    return;
  }
  const { document, selection } = editor;
  const convert = client.code2ProtocolConverter;
  const touching = vscode.languages
    .getDiagnostics(document.uri)
    .filter((d) => d.range.start.line <= selection.end.line && d.range.end.line >= selection.start.line);
  const offered = await client.sendRequest(CodeActionRequest.type, {
    textDocument: convert.asTextDocumentIdentifier(document),
    range: convert.asRange(selection),
    context: {
      diagnostics: await convert.asDiagnostics(touching),
      triggerKind: CodeActionTriggerKind.Invoked,
    },
  });
  const chosen = (offered ?? []).find(
    (a): a is CodeAction => CodeAction.is(a) && (a.data as { action?: string })?.action === tag,
  );
  if (!chosen) {
    void vscode.window.showInformationMessage(`codeagent: nothing to "${label}" here`);
    return;
  }
  const resolved = await client.sendRequest(CodeActionResolveRequest.type, chosen);
  if (resolved.edit) {
    await vscode.workspace.applyEdit(await client.protocol2CodeConverter.asWorkspaceEdit(resolved.edit));
  } else if (tag !== "explain") {
    void vscode.window.showInformationMessage(
      `codeagent: ${chosen.title}: the model's answer did not pass the checks; nothing was changed`,
    );
  }
}

/** Model, device and the latency of the last answered completion. */
class StatusBar implements vscode.Disposable {
  private readonly item = vscode.window.createStatusBarItem(vscode.StatusBarAlignment.Right, 100);
  private timer: NodeJS.Timeout | undefined;

  constructor() {
    this.item.name = "codeagent";
    this.item.command = "codeagent.showStats";
    this.item.text = "$(loading~spin) codeagent";
    this.item.show();
  }

  /** Refreshes now and then every `seconds` (the model loads in the background); 0 = only
   * after completions. */
  watch(seconds: number): void {
    clearInterval(this.timer);
    this.timer = seconds > 0 ? setInterval(() => void this.refresh(), seconds * 1000) : undefined;
    void this.refresh();
  }

  async refresh(): Promise<void> {
    let current: Stats | undefined;
    try {
      current = await stats();
    } catch {
      current = undefined; // the server is restarting; the next refresh will tell
    }
    if (!current) {
      this.item.text = "$(circle-slash) codeagent";
      this.item.tooltip = "codeagent-lsp is not running";
    } else if (!current.model) {
      this.item.text = current.problem ? "$(warning) codeagent: no model" : "$(loading~spin) codeagent";
      this.item.tooltip = current.problem ?? "loading the model";
    } else {
      const answered = ["ok", "typeahead", "prefetched"];
      const last = [...current.records].reverse().find((r) => answered.includes(r.outcome));
      const latency = last ? ` · ${Math.round(last.totalMs)} ms` : "";
      this.item.text = `$(sparkle) ${current.model.name} · ${current.model.device}${latency}`;
      this.item.tooltip = last
        ? `Last completion: ${last.promptTokens} prompt tokens, ${last.reusedTokens} reused from ` +
          `the cache, ${last.evaluatedTokens} evaluated, first token after ` +
          `${Math.round(last.ttftMs)} ms. Click for the recent requests.`
        : "No completion yet. Click for the server's statistics.";
    }
  }

  dispose(): void {
    clearInterval(this.timer);
    this.item.dispose();
  }
}
