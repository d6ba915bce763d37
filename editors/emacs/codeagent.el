;;; codeagent.el --- codeagent-lsp through eglot  -*- lexical-binding: t; -*-

;; Load it from your init file: (load "/path/to/editors/emacs/codeagent.el")
;; then M-x eglot in a Python, Rust, Go, TypeScript, Java or C/C++ buffer (or add
;; `eglot-ensure' to those modes' hooks).  eglot is built into Emacs 29 and later.
;;
;; eglot talks to one server per buffer: this entry makes codeagent-lsp that server for the
;; modes below, in place of the language's usual one.  Completions come through
;; `completion-at-point' (the popup of corfu or company when installed), hover through eldoc,
;; code actions through `eglot-code-actions' or the keys bound at the end.
;;
;; Settings: `codeagent-initialization-options' below; per project, `eglot-workspace-configuration'
;; in .dir-locals.el overrides them: ((nil . ((eglot-workspace-configuration
;;                                             . (:codeagent (:completion (:maxTokens 32)))))))

;;; Code:

(require 'eglot)

(defgroup codeagent nil
  "Self-hosted AI code completion through codeagent-lsp."
  :group 'tools)

(defcustom codeagent-command '("codeagent-lsp")
  "The command that starts the server, with its arguments."
  :type '(repeat string))

(defcustom codeagent-initialization-options
  '(:model "qwen2.5-coder-0.5b" :engine (:threads 0) :completion (:maxTokens 48))
  "Settings sent as initializationOptions: the README's keys without `codeagent.'."
  :type 'plist)

(defconst codeagent-modes
  '(python-mode python-ts-mode rust-mode rust-ts-mode go-mode go-ts-mode
    typescript-mode typescript-ts-mode tsx-ts-mode js-mode js-ts-mode
    java-mode java-ts-mode c-mode c-ts-mode c++-mode c++-ts-mode)
  "Major modes whose buffers eglot connects to codeagent-lsp.")

(add-to-list 'eglot-server-programs
             `(,codeagent-modes
               . ,(lambda (&rest _)
                    (append codeagent-command
                            (list :initializationOptions
                                  codeagent-initialization-options)))))

(defun codeagent--action (kind)
  "Offer the server's code actions of KIND for the region, or the line at point."
  (let ((bounds (if (use-region-p)
                    (list (region-beginning) (region-end))
                  (list (line-beginning-position) (line-end-position)))))
    (eglot-code-actions (car bounds) (cadr bounds) kind t)))

(defun codeagent-explain ()
  "Explain the code at point (a Markdown document the server opens)."
  (interactive)
  (codeagent--action "refactor"))

(defun codeagent-add-docstring ()
  "Add a docstring to the definition at point."
  (interactive)
  (codeagent--action "refactor.rewrite"))

(defun codeagent-generate-tests ()
  "Generate tests for the function at point (added to the project's test file)."
  (interactive)
  (codeagent--action "source"))

(defun codeagent-fix ()
  "Fix the diagnostic on this line with a minimal edit."
  (interactive)
  (codeagent--action "quickfix"))

(define-key eglot-mode-map (kbd "C-c a e") #'codeagent-explain)
(define-key eglot-mode-map (kbd "C-c a d") #'codeagent-add-docstring)
(define-key eglot-mode-map (kbd "C-c a t") #'codeagent-generate-tests)
(define-key eglot-mode-map (kbd "C-c a f") #'codeagent-fix)
(define-key eglot-mode-map (kbd "C-c a a") #'eglot-code-actions)

(provide 'codeagent)
;;; codeagent.el ends here
