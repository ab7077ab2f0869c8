module github.com/gobetween/gobetween

go 1.26

require (
	github.com/BurntSushi/toml v1.6.0 // indirect
	github.com/go-chi/chi/v5 v5.5.0 // indirect
)
