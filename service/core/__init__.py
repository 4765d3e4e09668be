"""The study contract: what a study, a task, an error and a public record are. Imports no other part."""
