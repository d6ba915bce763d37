;;; emacs_session.el --- drives eglot with editors/emacs/codeagent.el, in batch  -*- lexical-binding: t; -*-

;; Loaded after codeagent.el (`emacs --batch -q -l codeagent.el -l emacs_session.el'): opens
;; the spec's file, connects with M-x eglot as a user would, and asks through Emacs's own
;; commands: a completion through `completion-at-point', hover through eldoc, a definition
;; through xref and the code actions.  Nothing is asserted here: it writes what it saw to the
;; spec's `out' as JSON and the Python test judges.  The spec (JSON, path in
;; $CODEAGENT_EMACS_SPEC) is written by tests/e2e/editors/test_emacs_eglot.py.

;;; Code:

(require 'eglot)
(require 'json)

(defvar codeagent-test--spec
  (json-parse-string (with-temp-buffer
                       (insert-file-contents (getenv "CODEAGENT_EMACS_SPEC"))
                       (buffer-string))
                     :object-type 'plist :array-type 'list
                     :false-object :json-false :null-object nil))

(defun codeagent-test--get (key)
  (plist-get codeagent-test--spec key))

(defun codeagent-test--wait (what predicate)
  "Let the server's messages in until PREDICATE returns non-nil, then return that value."
  (let ((deadline (+ (float-time) (codeagent-test--get :deadline_s)))
        value)
    (while (not (setq value (funcall predicate)))
      (when (> (float-time) deadline)
        (error "Gave up waiting for %s" what))
      (accept-process-output nil 0.1))
    value))

(defun codeagent-test--goto (place)
  "PLACE is (:line 1-based :column 0-based, in characters)."
  (goto-char (point-min))
  (forward-line (1- (plist-get place :line)))
  (forward-char (plist-get place :column)))

(defun codeagent-test--line ()
  (buffer-substring-no-properties (line-beginning-position) (line-end-position)))

(defun codeagent-test--completion ()
  "The candidates `completion-at-point' offers at the spec's place, and the line after it
inserted the only one."
  (codeagent-test--goto (codeagent-test--get :completion))
  (let* ((capf (run-hook-wrapped 'completion-at-point-functions
                                 (lambda (f) (and (functionp f) (funcall f)))))
         (typed (buffer-substring-no-properties (nth 0 capf) (nth 1 capf)))
         (candidates (all-completions typed (nth 2 capf))))
    (completion-at-point)
    (list :candidates (vconcat (mapcar #'substring-no-properties candidates))
          :line (codeagent-test--line))))

(defun codeagent-test--hover ()
  "What eldoc shows at the spec's place, once the server's index answers there.
The display function stays in place for the whole wait: eldoc may show the docs from a
timer (0.3 s after a callback that is not the first of `eldoc-documentation-functions'),
after any one `accept-process-output' has returned.  A new request goes out every 2 s."
  (codeagent-test--goto (codeagent-test--get :hover))
  (let* ((shown nil)
         (asked 0)
         (eldoc-display-functions
          (list (lambda (docs _interactive)
                  (when docs
                    (setq shown (mapconcat (lambda (doc) (format "%s" (car doc)))
                                           docs "\n")))))))
    (codeagent-test--wait
     "hover text"
     (lambda ()
       (when (> (- (float-time) asked) 2)
         (setq asked (float-time))
         (eldoc-print-current-symbol-info t))
       (and shown (not (string-empty-p shown)) shown)))))

(defun codeagent-test--definition ()
  "Where `xref-find-definitions' (M-.) takes the user from the spec's place."
  (codeagent-test--goto (codeagent-test--get :definition))
  (let ((xref-prompt-for-identifier nil))
    (call-interactively #'xref-find-definitions))
  (prog1 (list :file (buffer-file-name) :line (line-number-at-pos)
               :text (codeagent-test--line))
    (xref-pop-marker-stack)))

(defun codeagent-test--actions ()
  "The titles of the code actions offered on the spec's line."
  (codeagent-test--goto (codeagent-test--get :actions))
  (vconcat (mapcar (lambda (action) (plist-get action :title))
                   (eglot-code-actions (line-beginning-position) (line-end-position)))))

(defun codeagent-test--stats ()
  (jsonrpc-request (eglot-current-server) :codeagent/stats eglot--{}))

(defun codeagent-test--session ()
  (let ((settings (codeagent-test--get :initialization_options)))
    (when settings (setq codeagent-initialization-options settings)))
  (find-file (codeagent-test--get :file))
  (let ((eglot-sync-connect t))
    (call-interactively #'eglot))  ; M-x eglot
  (let ((server (codeagent-test--wait "eglot to connect" #'eglot-current-server)))
    (list :connected (jsonrpc-running-p server)
          :server (plist-get (eglot--server-info server) :name)
          :completion (codeagent-test--completion)
          :hover (codeagent-test--hover)
          :definition (codeagent-test--definition)
          :actions (codeagent-test--actions)
          :stats (codeagent-test--stats))))

(let ((out (codeagent-test--get :out))
      (result (condition-case err
                  (codeagent-test--session)
                (error (list :error (error-message-string err))))))
  (with-temp-file out
    (insert (json-encode result)))
  (kill-emacs 0))

;;; emacs_session.el ends here
