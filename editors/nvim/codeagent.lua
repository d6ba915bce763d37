-- codeagent-lsp for Neovim. Put this file on your runtimepath (e.g. ~/.config/nvim/lua/) and
-- `require("codeagent").setup({ model = "qwen2.5-coder-0.5b" })` from init.lua.
-- Neovim 0.11+: vim.lsp.config + vim.lsp.enable; 0.8-0.10: vim.lsp.start on FileType;
-- 0.7: vim.lsp.start_client + buf_attach_client. Inline (ghost text) completion needs 0.12's
-- vim.lsp.inline_completion; older versions get the completion popup.
-- Keymaps in attached buffers: <leader>ce explain (normal, or the visual selection),
-- <leader>cd add docstring, <leader>ct generate tests, <leader>cf fix the line's diagnostic,
-- <leader>ca every action in a menu; gd, gr and K for definition, references and hover;
-- on 0.12, <Tab> in insert mode accepts the ghost text (a plain <Tab> when there is none).
-- Entering a buffer and a settled cursor (CursorHold) send codeagent/didFocus: the server
-- warms the prompt there. Accepting a ghost-text suggestion (0.12) runs its codeagent.accepted
-- command (workspace/executeCommand) and the server prefetches the next suggestion; with the
-- popup the server sees the accept in the change itself.
local M = {}

local filetypes = { "python", "javascript", "typescript", "typescriptreact", "go", "rust",
                    "java", "c", "cpp" }
local root_markers = { ".git", "pyproject.toml", "package.json", "go.mod", "Cargo.toml" }

local function root_dir(bufnr)
  local name = vim.api.nvim_buf_get_name(bufnr)
  local found = vim.fs and vim.fs.find and vim.fs.find(root_markers,
    { upward = true, path = vim.fs.dirname(name) })[1]
  return found and vim.fs.dirname(found) or vim.fn.getcwd()
end

local function attached_client(bufnr)
  -- get_clients is 0.10+ (its predecessor, deprecated there, has no filter argument in 0.7)
  local clients = vim.lsp.get_clients and vim.lsp.get_clients() or vim.lsp.get_active_clients()
  for _, c in pairs(clients) do
    if c.name == "codeagent" and vim.lsp.buf_is_attached(bufnr, c.id) then return c end
  end
end

local function request(client, ...)  -- 0.11 made `request` a method and deprecated the field
  if vim.fn.has("nvim-0.11") == 1 then return client:request(...) end
  return client.request(...)
end

-- The diagnostics on a line, as LSP sends them: the server's "Fix" action answers these.
local function line_diagnostics(bufnr, row)
  local found = {}
  for _, d in ipairs(vim.diagnostic.get(bufnr, { lnum = row })) do
    table.insert(found, { message = d.message, severity = d.severity, source = d.source,
      range = { start = { line = d.lnum, character = d.col },
                ["end"] = { line = d.end_lnum or d.lnum, character = d.end_col or d.col } } })
  end
  return found
end

-- Runs the server's code action tagged `tag` ("explain", "docstring", "tests" or "fix": the
-- `data.action` of codeagent_lsp/features/actions.py) at the cursor, or on the last visual
-- selection when `visual` is set: resolves it (the model runs then) and applies its edit.
-- Explanations arrive through window/showDocument (0.8+) or window/showMessage (0.7).
function M.action(tag, visual)
  local bufnr = vim.api.nvim_get_current_buf()
  local client = attached_client(bufnr)
  if not client then return vim.notify("codeagent: not attached to this buffer") end
  local params = visual
    and vim.lsp.util.make_given_range_params(nil, nil, bufnr, client.offset_encoding)
    or vim.lsp.util.make_range_params(0, client.offset_encoding)
  params.context = { diagnostics = line_diagnostics(bufnr, params.range.start.line) }
  request(client, "textDocument/codeAction", params, function(err, actions)
    local chosen
    for _, a in ipairs(actions or {}) do
      if type(a.data) == "table" and a.data.action == tag then chosen = chosen or a end
    end
    if err or not chosen then return vim.notify("codeagent: no " .. tag .. " action here") end
    request(client, "codeAction/resolve", chosen, function(resolve_err, resolved)
      if resolved and resolved.edit then
        vim.lsp.util.apply_workspace_edit(resolved.edit, client.offset_encoding)
      elseif resolve_err or tag ~= "explain" then
        vim.notify("codeagent: " .. chosen.title .. ": nothing to change")
      end
    end, bufnr)
  end, bufnr)
end

local function notify(client, method, params)  -- a method since 0.11, like `request`
  if vim.fn.has("nvim-0.11") == 1 then return client:notify(method, params) end
  return client.notify(method, params)
end

-- Tells the server where the cursor settled (codeagent/didFocus), so it computes the suggestion
-- there in the background and the first request there answers from it.
local function focus_events(bufnr)
  vim.api.nvim_create_autocmd({ "BufEnter", "CursorHold", "CursorHoldI", "InsertEnter" }, {
    buffer = bufnr,
    callback = function()
      local client = attached_client(bufnr)
      if client and vim.api.nvim_get_current_buf() == bufnr then
        notify(client, "codeagent/didFocus",
               vim.lsp.util.make_position_params(0, client.offset_encoding))
      end
    end,
  })
end

local function keymaps(bufnr)
  focus_events(bufnr)
  local opts = { buffer = bufnr, silent = true }
  local function run(tag) return function() M.action(tag) end end
  vim.keymap.set("n", "<leader>ca", vim.lsp.buf.code_action, opts)  -- every action, in a menu
  vim.keymap.set("n", "<leader>ce", run("explain"), opts)
  vim.keymap.set("x", "<leader>ce", ':<C-u>lua require("codeagent").action("explain", true)<CR>',
                 opts)  -- the selection: <C-u> leaves visual mode and sets the '< '> marks
  vim.keymap.set("n", "<leader>cd", run("docstring"), opts)
  vim.keymap.set("n", "<leader>ct", run("tests"), opts)
  vim.keymap.set("n", "<leader>cf", run("fix"), opts)
  vim.keymap.set("n", "gd", vim.lsp.buf.definition, opts)
  vim.keymap.set("n", "gr", vim.lsp.buf.references, opts)
  vim.keymap.set("n", "K", vim.lsp.buf.hover, opts)
end

function M.setup(settings)
  local config = {
    name = "codeagent",
    cmd = { "codeagent-lsp" },
    filetypes = filetypes,
    root_markers = root_markers,
    init_options = settings or {},
    settings = { codeagent = settings or {} },
  }
  if vim.lsp.config and vim.lsp.enable then  -- 0.11+
    vim.lsp.config("codeagent", config)
    vim.lsp.enable("codeagent")
    vim.api.nvim_create_autocmd("LspAttach", {
      callback = function(args)
        local client = vim.lsp.get_client_by_id(args.data.client_id)
        if client and client.name == "codeagent" then
          keymaps(args.buf)
          if vim.lsp.inline_completion then  -- 0.12+: ghost text, <Tab> accepts it
            vim.lsp.inline_completion.enable(true, { bufnr = args.buf })
            vim.keymap.set("i", "<Tab>", function()
              if not vim.lsp.inline_completion.get() then return "<Tab>" end
            end, { buffer = args.buf, expr = true, desc = "codeagent: accept the ghost text" })
          end
        end
      end,
    })
    return
  end
  vim.api.nvim_create_autocmd("FileType", {
    pattern = filetypes,
    callback = function(args)
      config.root_dir = root_dir(args.buf)
      if vim.lsp.start then  -- 0.8-0.10
        vim.lsp.start(config, { bufnr = args.buf })
      else  -- 0.7
        M.client_id = M.client_id or vim.lsp.start_client(config)
        vim.lsp.buf_attach_client(args.buf, M.client_id)
      end
      keymaps(args.buf)
    end,
  })
end

return M
