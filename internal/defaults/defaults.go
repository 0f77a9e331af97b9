// Package defaults fills in zero-valued configuration fields, the one way
// every Config in the relay treats "zero means the default".
package defaults

// Set stores def in *field when *field is the zero value.
func Set[T comparable](field *T, def T) {
	var zero T
	if *field == zero {
		*field = def
	}
}
