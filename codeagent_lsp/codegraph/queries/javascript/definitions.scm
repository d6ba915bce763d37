; JavaScript definitions: own patterns first, then the shared ones (first match wins).
; inherits: _ecma

(class_body
  (field_definition property: (property_identifier) @name) @definition.field)

(class
  name: (identifier) @name
  body: (class_body) @body) @definition.class
