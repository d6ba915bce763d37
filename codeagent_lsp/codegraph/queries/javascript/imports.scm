; JavaScript imports.
; inherits: _ecma
