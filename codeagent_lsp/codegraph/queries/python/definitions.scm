; Python definitions. Captures: @definition.<kind> (the whole node), @name, @body (optional:
; the signature is the text before it). Earlier patterns win when two match one name.

; Methods: functions directly in a class body, decorated or not.
(class_definition
  body: (block
    (function_definition
      name: (identifier) @name
      body: (block) @body) @definition.method))

(class_definition
  body: (block
    (decorated_definition
      definition: (function_definition
        name: (identifier) @name
        body: (block) @body) @definition.method)))

(function_definition
  name: (identifier) @name
  body: (block) @body) @definition.function

(class_definition
  name: (identifier) @name
  body: (block) @body) @definition.class

(type_alias_statement
  left: (type (identifier) @name)) @definition.type

; Class attributes (`sides: int = 0`, `x: int`).
(class_definition
  body: (block
    (expression_statement
      (assignment left: (identifier) @name)) @definition.field))

; Module-level names; the extractor drops those inside functions (locals).
((expression_statement
  (assignment left: (identifier) @name)) @definition.constant
  (#match? @name "^_*[A-Z][A-Z0-9_]*$"))

(expression_statement
  (assignment left: (identifier) @name)) @definition.variable
