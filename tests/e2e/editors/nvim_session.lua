-- Drives Neovim 0.12 (headless) as a user would: editors/nvim/codeagent.lua's setup(), a
-- Python file, insert mode, typing, <Tab> to accept ghost text, then the <leader>c keymaps.
-- Nothing is asserted here: it writes what a user would see (ghost text, buffer lines, opened
-- windows, messages) and the server's codeagent/stats to spec.out as JSON, and the Python test
-- judges. The spec (JSON, path in $CODEAGENT_NVIM_SPEC) is written by tests/e2e/editors/nvim.py.
-- Insert mode waits for keys in Neovim's main loop, so every step runs from a timer, in a
-- coroutine that sleeps between polls.
local spec = vim.json.decode(table.concat(vim.fn.readfile(vim.env.CODEAGENT_NVIM_SPEC), "\n"))
local out = { messages = {}, steps = {} }
local ghost_ns = vim.api.nvim_create_namespace("nvim.lsp.inline_completion")
local linter = vim.api.nvim_create_namespace("test-linter")
local main, buf

package.path = spec.plugin_dir .. "/?.lua;" .. package.path
vim.g.mapleader = " "
vim.cmd("filetype plugin indent on")  -- -u NONE starts without it
vim.notify = function(message) table.insert(out.messages, message) end  -- as a notify plugin

local function finish()
  vim.fn.writefile({ vim.json.encode(out) }, spec.out)
  vim.cmd("qa!")
end

local function sleep(ms)  -- vim.wait cannot run inside a timer's callback
  vim.defer_fn(function() coroutine.resume(main) end, ms)
  coroutine.yield()
end

-- Inside the coroutine: poll `cond` every 50 ms until it returns a value, or fail the session.
local function wait_for(what, cond)
  local deadline = vim.uv.now() + spec.deadline_ms
  while true do
    local ok, value = pcall(cond)
    if ok and value then return value end
    if vim.uv.now() > deadline then error("gave up waiting for " .. what, 0) end
    sleep(50)
  end
end

local function client()
  return vim.lsp.get_clients({ name = "codeagent", bufnr = buf })[1]
end

local function request(method, params)
  local done
  client():request(method, params or vim.empty_dict(), function(err, result)
    done = { result = result, error = err and err.message }
  end, buf)
  return wait_for(method, function() return done end)
end

local function ghost()  -- the ghost text as shown: inline text, then any virtual lines below
  local marks = vim.api.nvim_buf_get_extmarks(buf, ghost_ns, 0, -1, { details = true })
  if #marks == 0 then return nil end
  local details, rows = marks[1][4], {}
  for _, line in ipairs({ details.virt_text or {}, unpack(details.virt_lines or {}) }) do
    local chunks = {}
    for _, chunk in ipairs(line) do table.insert(chunks, chunk[1]) end
    table.insert(rows, table.concat(chunks))
  end
  return { text = table.concat(rows, "\n"), row = marks[1][2], col = marks[1][3] }
end

local function press(keys)  -- as typed, through mappings
  vim.api.nvim_feedkeys(vim.api.nvim_replace_termcodes(keys, true, false, true), "mt", false)
end

local function lines() return vim.api.nvim_buf_get_lines(buf, 0, -1, false) end

local function records()
  return request("codeagent/stats").result.records
end

local function windows()  -- the file shown in each window
  local shown = {}
  for _, win in ipairs(vim.api.nvim_list_wins()) do
    table.insert(shown, vim.api.nvim_buf_get_name(vim.api.nvim_win_get_buf(win)))
  end
  return shown
end

local function ghost_text_session()
  vim.api.nvim_win_set_cursor(0, { spec.row, spec.col })
  press("A")
  out.shown = wait_for("ghost text", ghost)
  out.line_while_shown = vim.api.nvim_get_current_line()
  out.records_shown = records()
  local before = #out.records_shown
  local typed = out.shown.text:sub(1, 1)
  press(typed)
  out.after_typing = wait_for("ghost text after typing", function()
    local now = ghost()
    return vim.api.nvim_get_current_line():sub(-1) == typed and now
      and now.text ~= out.shown.text and now
  end)
  -- the server's answer to the request the keystroke sent (after 0.12's 200 ms debounce)
  out.records_after_typing = wait_for("the server's answer after typing", function()
    local new = vim.list_slice(records(), before + 1)
    return #new > 0 and new
  end)
  out.after_answer = ghost()
  press("<Tab>")  -- the plugin's accept key
  wait_for("the accepted text", function() return ghost() == nil end)
  out.accepted_lines = lines()
  press("<Esc>")
  wait_for("normal mode", function() return vim.api.nvim_get_mode().mode == "n" end)
end

-- One <leader>c keymap on spec.action_row (or the step's row, after its diagnostic): what it
-- changed in the file, the window it opened, the file it created (a buffer, not shown) and
-- what it said.
local function keymap_step(step)
  vim.api.nvim_set_current_win(vim.fn.bufwinid(buf))
  vim.api.nvim_win_set_cursor(0, { step.row or spec.action_row, 0 })
  local before_lines = lines()
  if step.diagnostic then  -- the user breaks a line and another linter reports it
    local row = step.row - 1
    vim.api.nvim_buf_set_lines(buf, row, row + 1, true, { step.diagnostic.line })
    vim.diagnostic.set(linter, buf, { { lnum = row, col = 0, message = step.diagnostic.message,
      severity = vim.diagnostic.severity.ERROR } })
  end
  local tick, said = vim.b[buf].changedtick, #out.messages
  local known = {}
  for _, id in ipairs(vim.list_extend(vim.api.nvim_list_wins(), vim.api.nvim_list_bufs())) do
    known[id] = true
  end
  local function new(ids)
    for _, id in ipairs(ids) do
      if not known[id] then return id end
    end
  end
  local function opened() return new(vim.api.nvim_list_wins()) end
  local function created() return new(vim.api.nvim_list_bufs()) end
  press(step.keys)
  wait_for(step.keys .. "'s result", function()
    return vim.b[buf].changedtick ~= tick or opened() or created() or #out.messages ~= said
  end)
  sleep(300)  -- an edit's last lines, a window's content
  local result = { keys = step.keys, messages = vim.list_slice(out.messages, said + 1) }
  if vim.b[buf].changedtick ~= tick then result.lines = lines() end
  local win = opened()
  if win then
    local shown = vim.api.nvim_win_get_buf(win)
    result.opened = vim.api.nvim_buf_get_name(shown)
    result.opened_lines = vim.api.nvim_buf_get_lines(shown, 0, -1, false)
    vim.api.nvim_win_close(win, true)
  end
  local file = created()
  if file and not win then
    result.created = vim.api.nvim_buf_get_name(file)
    result.created_lines = vim.api.nvim_buf_get_lines(file, 0, -1, false)
  end
  table.insert(out.steps, result)
  -- back to the file as it was, for the next keymap
  vim.diagnostic.reset(linter, buf)
  vim.api.nvim_buf_set_lines(buf, 0, -1, false, before_lines)
end

local function session()
  require("codeagent").setup(spec.settings)
  if spec.lsp_config then  -- the user's own vim.lsp.config on top (0.11+), e.g. `settings`
    vim.lsp.config("codeagent", spec.lsp_config)
  end
  vim.cmd.edit(spec.file)
  buf = vim.api.nvim_get_current_buf()
  wait_for("the server", function() return client() and client().initialized end)
  if spec.ghost_text then ghost_text_session() end
  vim.ui.select = function(items, opts, on_choice)  -- <leader>ca's menu, as a picker would
    local titles = {}
    for _, item in ipairs(items) do table.insert(titles, opts.format_item(item)) end
    out.menu = titles
    for i, title in ipairs(titles) do
      if title:find(spec.menu_choice, 1, true) then return on_choice(items[i], i) end
    end
    on_choice(nil, nil)
  end
  for _, step in ipairs(spec.keymaps or {}) do keymap_step(step) end
  out.records = records()
end

main = coroutine.create(function()
  local ok, err = xpcall(session, debug.traceback)
  if not ok then out.error = err end
  finish()
end)
vim.defer_fn(function() coroutine.resume(main) end, 0)
