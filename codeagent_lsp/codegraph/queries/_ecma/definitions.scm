; Shared by javascript, typescript and tsx (through `; inherits: _ecma`): only node types
; that all three grammars have. Not a language of its own.

; Methods of classes; object-literal methods are left out (mostly callbacks).
(class_body
  (method_definition
    name: (_) @name
    body: (statement_block) @body) @definition.method)

(function_declaration
  name: (identifier) @name
  body: (statement_block) @body) @definition.function

(generator_function_declaration
  name: (identifier) @name
  body: (statement_block) @body) @definition.function

(class_declaration
  name: (_) @name
  body: (class_body) @body) @definition.class

; `const f = () => ...` / `var f = function () {...}`: a lone declarator takes its declaration
; (so the signature reads `const f = () =>`), one of several only itself.
(lexical_declaration
  .
  (variable_declarator
    name: (identifier) @name
    value: [
      (arrow_function body: (_) @body)
      (function_expression body: (_) @body)
    ])
  .) @definition.function

(variable_declaration
  .
  (variable_declarator
    name: (identifier) @name
    value: [
      (arrow_function body: (_) @body)
      (function_expression body: (_) @body)
    ])
  .) @definition.function

(variable_declarator
  name: (identifier) @name
  value: [
    (arrow_function body: (_) @body)
    (function_expression body: (_) @body)
  ]) @definition.function

; Named function expressions (`setTimeout(function tick() {...})`); also what error recovery
; makes of a declaration after a broken one.
(function_expression
  name: (identifier) @name
  body: (statement_block) @body) @definition.function

; `exports.f = function () {}`, `Foo.prototype.f = () => {}`
(expression_statement
  (assignment_expression
    left: (member_expression property: (property_identifier) @name)
    right: [
      (arrow_function body: (_) @body)
      (function_expression body: (_) @body)
    ])) @definition.function

; Module-level bindings (the extractor drops those inside functions).
(lexical_declaration
  kind: "const"
  .
  (variable_declarator name: (identifier) @name)
  .) @definition.constant

(lexical_declaration
  kind: "const"
  (variable_declarator name: (identifier) @name) @definition.constant)

(lexical_declaration
  .
  (variable_declarator name: (identifier) @name)
  .) @definition.variable

(variable_declaration
  .
  (variable_declarator name: (identifier) @name)
  .) @definition.variable

(variable_declarator name: (identifier) @name) @definition.variable
