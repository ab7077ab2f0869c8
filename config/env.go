package config

import (
	"os"
	"regexp"
)

// envPattern is gobetween 0.8's: the shortest "${...}" on one line.
var envPattern = regexp.MustCompile(`\$\{.*?\}`)

// SubstituteEnv replaces every ${NAME} in data with getenv(NAME), with gobetween
// 0.8's semantics: a missing variable becomes "", there are no defaults
// (${A:-b} looks up the variable "A:-b"), no $NAME form and no escaping. The
// substitution is textual, before decoding. A nil getenv means os.Getenv.
func SubstituteEnv(data []byte, getenv func(string) string) []byte {
	if getenv == nil {
		getenv = os.Getenv
	}
	return envPattern.ReplaceAllFunc(data, func(m []byte) []byte {
		return []byte(getenv(string(m[2 : len(m)-1])))
	})
}
