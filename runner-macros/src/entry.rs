//! `#[runner::main]` and `#[runner::test]`: parse the options into a [`Config`], check the
//! function, then expand. Every error is spanned at the offending token, and even on error the
//! function is still emitted (with a valid signature), so IDEs keep working and the only errors
//! the user sees are ours.

use proc_macro2::{Ident, Span, TokenStream, TokenTree};
use quote::{quote, quote_spanned, ToTokens};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{AttrStyle, Attribute, Expr, ItemFn, Lit, Meta, ReturnType, Token};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Main,
    Test,
}

impl Kind {
    fn attribute(self) -> &'static str {
        match self {
            Kind::Main => "#[runner::main]",
            Kind::Test => "#[runner::test]",
        }
    }

    fn options(self) -> &'static str {
        match self {
            Kind::Main => "`debug`, `loop_factory`, `shutdown_timeout`, `workers` and `crate`",
            Kind::Test => {
                "`debug`, `loop_factory`, `shutdown_timeout`, `workers`, `crate` and `timeout`"
            }
        }
    }
}

/// What the options asked for.
struct Config {
    debug: Option<bool>,
    loop_factory: Option<Expr>,
    crate_path: TokenStream,
    timeout: Option<Timeout>,
    /// How long close waits for the default executor's threads, in milliseconds.
    shutdown_timeout: Option<u64>,
    workers: Option<Workers>,
}

/// `workers = N` or `workers = "auto"`.
enum Workers {
    Count(u64),
    Auto,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            debug: None,
            loop_factory: None,
            crate_path: quote!(::runner),
            timeout: None,
            shutdown_timeout: None,
            workers: None,
        }
    }
}

/// A test's `timeout = ".."`.
struct Timeout {
    ms: u64,
    /// What the user wrote, for the failure message.
    text: String,
    /// The literal's span: the failure points there.
    span: Span,
}

/// All the errors found, reported together.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, span: impl ToTokens, message: impl std::fmt::Display) {
        self.push_error(syn::Error::new_spanned(span, message));
    }

    fn push_error(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }

    fn into_tokens(self) -> TokenStream {
        self.0.map(|e| e.into_compile_error()).unwrap_or_default()
    }
}

pub(crate) fn main(args: TokenStream, item: TokenStream) -> TokenStream {
    entry(Kind::Main, args, item)
}

pub(crate) fn test(args: TokenStream, item: TokenStream) -> TokenStream {
    entry(Kind::Test, args, item)
}

fn entry(kind: Kind, args: TokenStream, item: TokenStream) -> TokenStream {
    let func: ItemFn = match syn::parse2(item.clone()) {
        Ok(func) => func,
        Err(error) => {
            // Not a function: give the tokens back untouched, with the reason.
            let mut tokens = item;
            tokens.extend(error.into_compile_error());
            return tokens;
        }
    };
    let mut errors = Errors::default();
    let config = parse_config(kind, args, &mut errors);
    let shape = check_function(kind, &func, &mut errors);
    let mut tokens = expand(kind, func, &config, shape);
    tokens.extend(errors.into_tokens());
    tokens
}

fn parse_config(kind: Kind, args: TokenStream, errors: &mut Errors) -> Config {
    let mut config = Config::default();
    let metas = match Punctuated::<Meta, Token![,]>::parse_terminated.parse2(args) {
        Ok(metas) => metas,
        Err(error) => {
            errors.push_error(error);
            return config;
        }
    };
    let mut seen: Vec<String> = Vec::new();
    for meta in metas {
        let name = meta.path().to_token_stream().to_string().replace(' ', "");
        if seen.contains(&name) {
            errors.push(
                meta.path(),
                format!("option `{name}` is given twice; give it once"),
            );
            continue;
        }
        seen.push(name.clone());
        match (name.as_str(), &meta) {
            ("debug", Meta::Path(_)) => config.debug = Some(true),
            ("debug", Meta::NameValue(nv)) => match lit(&nv.value) {
                Some(Lit::Bool(b)) => config.debug = Some(b.value),
                _ => errors.push(
                    &nv.value,
                    "`debug` takes a boolean: write `debug`, `debug = true` or `debug = false`",
                ),
            },
            ("loop_factory", Meta::NameValue(nv)) => config.loop_factory = Some(nv.value.clone()),
            ("crate", Meta::NameValue(nv)) => match lit(&nv.value) {
                Some(Lit::Str(s)) => match s.parse_with(syn::Path::parse_mod_style) {
                    Ok(path) => config.crate_path = respan(path.to_token_stream(), s.span()),
                    Err(_) => errors.push(&s, "`crate` takes a path, like `crate = \"runner\"`"),
                },
                _ => errors.push(&nv.value, "`crate` takes a path in a string, like `crate = \"runner\"`"),
            },
            ("timeout", _) if kind == Kind::Main => errors.push(
                meta.path(),
                "`timeout` is an option of #[runner::test] only; a program's main has no timeout",
            ),
            ("timeout", Meta::NameValue(nv)) => match lit(&nv.value) {
                Some(Lit::Str(s)) => match parse_timeout(&s.value()) {
                    Some(ms) => {
                        config.timeout = Some(Timeout {
                            ms,
                            text: s.value(),
                            span: s.span(),
                        })
                    }
                    None => errors.push(
                        &s,
                        format!(
                            "malformed timeout {:?}: write a whole number followed by `ms`, `s` \
                             or `m`, like `timeout = \"500ms\"`",
                            s.value()
                        ),
                    ),
                },
                _ => errors.push(&nv.value, "`timeout` takes a string, like `timeout = \"500ms\"`"),
            },
            ("shutdown_timeout", Meta::NameValue(nv)) => match lit(&nv.value) {
                Some(Lit::Str(s)) => match parse_timeout(&s.value()) {
                    Some(ms) => config.shutdown_timeout = Some(ms),
                    None => errors.push(
                        &s,
                        format!(
                            "malformed shutdown_timeout {:?}: write a whole number followed by \
                             `ms`, `s` or `m`, like `shutdown_timeout = \"5s\"`",
                            s.value()
                        ),
                    ),
                },
                _ => errors.push(
                    &nv.value,
                    "`shutdown_timeout` takes a string, like `shutdown_timeout = \"5s\"`",
                ),
            },
            ("workers", Meta::NameValue(nv)) => match lit(&nv.value) {
                Some(Lit::Int(n)) => match n.base10_parse::<u64>() {
                    Ok(0) | Err(_) => errors.push(
                        &n,
                        "`workers` takes a number of threads of at least 1, or \"auto\"",
                    ),
                    Ok(n) => config.workers = Some(Workers::Count(n)),
                },
                Some(Lit::Str(s)) if s.value() == "auto" => config.workers = Some(Workers::Auto),
                _ => errors.push(
                    &nv.value,
                    "`workers` takes a number of threads or \"auto\" (one per core), like \
                     `workers = 4` or `workers = \"auto\"`",
                ),
            },
            ("workers", _) => errors.push(
                &meta,
                "`workers` takes a value, like `workers = 4` or `workers = \"auto\"`",
            ),
            ("shutdown_timeout", _) => errors.push(
                &meta,
                "`shutdown_timeout` takes a string, like `shutdown_timeout = \"5s\"`",
            ),
            ("debug", _) => errors.push(&meta, "write `debug`, `debug = true` or `debug = false`"),
            ("loop_factory", _) => errors.push(
                &meta,
                "`loop_factory` takes a value: `loop_factory = my_loop` or `loop_factory = || EventLoop::new()`",
            ),
            ("crate", _) => errors.push(&meta, "`crate` takes a path in a string, like `crate = \"runner\"`"),
            ("timeout", _) => errors.push(&meta, "`timeout` takes a string, like `timeout = \"500ms\"`"),
            (other, _) => errors.push(
                meta.path(),
                format!("unknown option `{other}`; the options of {} are {}", kind.attribute(), kind.options()),
            ),
        }
    }
    config
}

/// A literal, seen through the invisible groups macro_rules! may wrap it in.
fn lit(expr: &Expr) -> Option<Lit> {
    match expr {
        Expr::Lit(l) => Some(l.lit.clone()),
        Expr::Group(g) => lit(&g.expr),
        _ => None,
    }
}

/// "500ms", "5s", "2m" to milliseconds.
fn parse_timeout(text: &str) -> Option<u64> {
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    let n: u64 = digits.parse().ok()?;
    let scale = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        _ => return None,
    };
    n.checked_mul(scale).filter(|ms| *ms > 0)
}

/// Give tokens parsed from a string the span of that string, so errors point at it.
fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut t| {
            t.set_span(span);
            t
        })
        .collect()
}

/// What expansion must work around when the function itself is wrong.
#[derive(Default)]
struct Shape {
    /// Parameters where none are allowed (`main`, a test): the function is kept, unused, and
    /// nothing else is emitted in its name, so the one error is ours.
    refused_parameters: bool,
    /// Index in the function's attributes of a second test attribute: dropped from the output,
    /// so that it does not expand again (a second `#[runner::test]` would add its own errors).
    second_test_attribute: Option<usize>,
}

fn check_function(kind: Kind, func: &ItemFn, errors: &mut Errors) -> Shape {
    let sig = &func.sig;
    if sig.asyncness.is_none() {
        errors.push(
            sig.fn_token,
            format!("the `async` keyword is missing from the function declaration: {} runs an `async fn`", kind.attribute()),
        );
    }
    let mut shape = Shape::default();
    if !sig.inputs.is_empty() {
        // tokio's rule: parameters are fine on any function but `main` and tests; such a
        // function becomes a sync function that runs its body on a fresh runner.
        let refused = match kind {
            Kind::Main if sig.ident == "main" => Some(
                "`main` cannot take parameters; read arguments with `std::env::args()` in the body",
            ),
            Kind::Main => None,
            Kind::Test => Some("test functions cannot take parameters"),
        };
        if let Some(message) = refused {
            shape.refused_parameters = true;
            errors.push(&sig.inputs, message);
        }
    }
    if kind == Kind::Test {
        if let Some(index) = func.attrs.iter().position(is_test_attribute) {
            shape.second_test_attribute = Some(index);
            errors.push(
                &func.attrs[index],
                "a second test attribute is supplied: #[runner::test] already makes the function a test; remove this one",
            );
        }
    }
    shape
}

/// `#[test]`, `#[tokio::test]`, `#[runner::test]`, `#[core::prelude::v1::test]`...
fn is_test_attribute(attr: &Attribute) -> bool {
    attr.path()
        .segments
        .last()
        .is_some_and(|s| s.ident == "test")
}

/// True if the type mentions `impl Trait` anywhere (`impl Iterator<..>`,
/// `Result<(), impl Debug>`): such a type cannot name a binding's type.
fn mentions_impl_trait(tokens: TokenStream) -> bool {
    tokens.into_iter().any(|token| match token {
        TokenTree::Ident(ident) => ident == "impl",
        TokenTree::Group(group) => mentions_impl_trait(group.stream()),
        _ => false,
    })
}

fn expand(kind: Kind, mut func: ItemFn, config: &Config, shape: Shape) -> TokenStream {
    // Inner attributes at the top of the body (`#![allow(..)]`) apply to the whole function:
    // lift them to it, as outer attributes.
    for attr in &mut func.attrs {
        attr.style = AttrStyle::Outer;
    }
    if let Some(index) = shape.second_test_attribute {
        func.attrs.remove(index);
    }
    if shape.refused_parameters {
        // Keep the user's function, unused, so that its body still type-checks; for `main`,
        // emit a valid entry point beside it so no second error ("main function not found")
        // appears.
        let attrs = &func.attrs;
        let vis = &func.vis;
        let mut sig = func.sig.clone();
        let block = &func.block;
        let entry_point = match kind {
            Kind::Main => {
                sig.ident = Ident::new("__runner_main_with_parameters", sig.ident.span());
                quote!(
                    fn main() {}
                )
            }
            Kind::Test => quote!(),
        };
        return quote! {
            #[allow(dead_code)]
            #(#attrs)* #vis #sig #block
            #entry_point
        };
    }

    let crate_path = &config.crate_path;
    let debug = match (kind, config.debug) {
        (_, Some(debug)) => Some(debug),
        (Kind::Test, None) => Some(true), // tests run in debug mode unless told otherwise
        (Kind::Main, None) => None,       // main follows RUNNER_DEBUG
    };
    let mut builder = quote!(#crate_path::Runner::builder());
    if let Some(debug) = debug {
        builder = quote!(#builder.debug(#debug));
    }
    if let Some(factory) = &config.loop_factory {
        builder = quote!(#builder.loop_factory(#factory));
    }
    if let Some(ms) = config.shutdown_timeout {
        builder =
            quote!(#builder.executor_shutdown_timeout(::core::time::Duration::from_millis(#ms)));
    }
    match config.workers {
        Some(Workers::Count(n)) => {
            let n = n as usize;
            builder = quote!(#builder.workers(#n));
        }
        Some(Workers::Auto) => {
            builder = quote!(#builder.workers(#crate_path::available_workers()));
        }
        None => {}
    }

    func.sig.asyncness = None;
    let block = &func.block;
    let body = match &func.sig.output {
        // No type can be named for the binding: the body's value is the function's, as is.
        ReturnType::Type(_, ty) if mentions_impl_trait(ty.to_token_stream()) => {
            quote_spanned! {block.span()=> let body = async #block; }
        }
        output => {
            // Where the type is declared: the type, or for `()` the function's name.
            let (output, declared_at) = match output {
                ReturnType::Default => (quote!(()), func.sig.ident.span()),
                ReturnType::Type(_, ty) => (ty.to_token_stream(), ty.span()),
            };
            // The declared type, named through `fn() -> T`, which also names `!` on stable Rust.
            let declared = quote_spanned! {block.span()=>
                <fn() -> #output as #crate_path::__private::Output>::Output
            };
            // An `async` block has no declared output: it takes the type of its first `return`.
            // So a `return` of the declared type that never runs comes first: a `return` of
            // another type in the body is then one error, at its value, as in an `async fn`
            // (else the block takes the body's type, and the mismatch surfaces twice: at the
            // whole body and at the attribute), and `?` in the body knows the `Result` it returns
            // into. It is spanned where the type is declared, since rustc's note "return type
            // inferred to be `T` here" points at it.
            let declared_return = quote_spanned! {declared_at=>
                return <fn() -> #output as #crate_path::__private::Output>::declared();
            };
            // The body keeps the user's spans. Binding its value to a local of the declared
            // type makes a type error in its tail point at the offending expression in the
            // user's code (not at the whole body). A body that diverges makes our last `return`
            // unreachable, and a declared `!` our first one: that lint is allowed on our
            // statements only, so the user's own lint levels hold for their code (the leading
            // underscore keeps the binding from being reported as unused).
            quote_spanned! {block.span()=>
                let body = async {
                    if false {
                        #[allow(unreachable_code)]
                        #declared_return
                    }
                    #[allow(
                        clippy::diverging_sub_expression,
                        clippy::let_unit_value,
                        clippy::type_complexity
                    )]
                    let __runner_output: #declared = #block;
                    #[allow(unreachable_code, clippy::needless_return)]
                    return __runner_output;
                };
            }
        }
    };
    let name = func.sig.ident.to_string();
    let run = match (kind, &config.timeout) {
        (Kind::Main, _) => quote! {
            match #builder.run(body) {
                ::core::result::Result::Ok(value) => value,
                ::core::result::Result::Err(error) => #crate_path::__private::entry_failed(error, #name),
            }
        },
        (Kind::Test, None) => quote! {
            match #builder.run(body) {
                ::core::result::Result::Ok(value) => value,
                ::core::result::Result::Err(error) => #crate_path::__private::test_failed(error),
            }
        },
        (Kind::Test, Some(timeout)) => {
            let (ms, text, span) = (timeout.ms, &timeout.text, timeout.span);
            // Spanned at the `timeout = ".."` literal, so that the failure points at the test.
            let check = quote_spanned! {span=>
                #crate_path::__private::TestTimeout::start(#ms, #text)
            };
            let checked = quote_spanned! {span=> timeout.check(ran) };
            // The timeout bounds the whole test: the body, then the runner's close.
            quote! {
                let timeout = #check;
                let ran = timeout.run(#builder, body);
                #checked
            }
        }
    };
    let test_attribute = match kind {
        Kind::Test if shape.second_test_attribute.is_none() => quote!(#[::core::prelude::v1::test]),
        _ => quote!(),
    };
    let attrs = &func.attrs;
    let vis = &func.vis;
    let sig = &func.sig;
    let mut tokens = quote! {
        #(#attrs)*
        #test_attribute
        #vis #sig
    };
    // The user's own braces around the new body: the item then spans only the user's tokens, so
    // lints about the item (an unused function under `deny(dead_code)`) are reported as usual.
    func.block.brace_token.surround(&mut tokens, |tokens| {
        body.to_tokens(tokens);
        run.to_tokens(tokens);
    });
    tokens
}

#[cfg(test)]
mod tests {
    use super::{mentions_impl_trait, parse_timeout};
    use quote::quote;

    #[test]
    fn timeouts_parse_to_milliseconds() {
        assert_eq!(parse_timeout("500ms"), Some(500));
        assert_eq!(parse_timeout("5s"), Some(5_000));
        assert_eq!(parse_timeout("2m"), Some(120_000));
    }

    #[test]
    fn malformed_timeouts_are_refused() {
        for text in [
            "",
            "ms",
            "5",
            "5 s",
            "5h",
            "1.5s",
            "-1s",
            "0ms",
            "99999999999999999999s",
        ] {
            assert_eq!(parse_timeout(text), None, "{text:?}");
        }
        assert_eq!(
            parse_timeout(&format!("{}m", u64::MAX / 60_000 + 1)),
            None,
            "overflow"
        );
    }

    #[test]
    fn impl_trait_is_found_anywhere_in_a_type() {
        assert!(mentions_impl_trait(quote!(impl Iterator<Item = u8>)));
        assert!(mentions_impl_trait(
            quote!(Result<(), impl std::fmt::Debug>)
        ));
        assert!(!mentions_impl_trait(
            quote!(Result<(), Box<dyn std::error::Error>>)
        ));
        assert!(!mentions_impl_trait(quote!(!)));
    }
}
