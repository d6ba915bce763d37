-- codeagent-lsp for Neovim. Put this file on your runtimepath (e.g. ~/.config/nvim/lua/) and
-- `require("codeagent").setup({ model = "qwen2.5-coder-0.5b" })` from init.lua.
-- Neovim 0.11+: vim.lsp.config + vim.lsp.enable; 0.8-0.10: vim.lsp.start on FileType;
-- 0.7: vim.lsp.start_client + buf_attach_client. Inline (ghost text) completion needs 0.12's
-- vim.lsp.inline_completion; older versions get the completion popup.
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

local function keymaps(bufnr)
  local opts = { buffer = bufnr, silent = true }
  vim.keymap.set("n", "<leader>ca", vim.lsp.buf.code_action, opts)  -- explain, docstring, fix, tests
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
          if vim.lsp.inline_completion then  -- 0.12+: ghost text
            vim.lsp.inline_completion.enable(true, { bufnr = args.buf })
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
