//! `#[runner::main]` and `#[runner::test]`: parse the options into a [`Config`], check the
//! function, then expand. Every error is spanned at the offending token, and even on error the
//! function is still emitted (with a valid signature), so IDEs keep working and the only errors
//! the user sees are ours.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned, ToTokens};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Attribute, Expr, ItemFn, Lit, Meta, ReturnType, Token};

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
            Kind::Main => "`debug`, `loop_factory`, `shutdown_timeout` and `crate`",
            Kind::Test => "`debug`, `loop_factory`, `shutdown_timeout`, `crate` and `timeout`",
        }
    }
}

/// What the options asked for.
struct Config {
    debug: Option<bool>,
    loop_factory: Option<Expr>,
    crate_path: TokenStream,
    /// Milliseconds, and the text the user wrote (for the failure message).
    timeout: Option<(u64, String)>,
    /// How long close waits for the default executor's threads, in milliseconds.
    shutdown_timeout: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            debug: None,
            loop_factory: None,
            crate_path: quote!(::runner),
            timeout: None,
            shutdown_timeout: None,
        }
    }
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
                    Some(ms) => config.timeout = Some((ms, s.value())),
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
    has_parameters: bool,
    second_test_attribute: bool,
}

fn check_function(kind: Kind, func: &ItemFn, errors: &mut Errors) -> Shape {
    let sig = &func.sig;
    if sig.asyncness.is_none() {
        errors.push(
            sig.fn_token,
            format!("the `async` keyword is missing from the function declaration: {} runs an `async fn`", kind.attribute()),
        );
    }
    let mut shape = Shape {
        has_parameters: !sig.inputs.is_empty(),
        ..Shape::default()
    };
    if shape.has_parameters {
        let message = match kind {
            Kind::Main => {
                "`main` cannot take parameters; read arguments with `std::env::args()` in the body"
            }
            Kind::Test => "test functions cannot take parameters",
        };
        errors.push(&sig.inputs, message);
    }
    if kind == Kind::Test {
        if let Some(attr) = func.attrs.iter().find(|a| is_test_attribute(a)) {
            shape.second_test_attribute = true;
            errors.push(
                attr,
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

fn expand(kind: Kind, mut func: ItemFn, config: &Config, shape: Shape) -> TokenStream {
    if shape.has_parameters {
        // Keep the user's function, unused, so that its body still type-checks; emit a valid
        // entry point beside it so no second error ("main function not found") appears.
        let attrs = &func.attrs;
        let vis = &func.vis;
        let mut sig = func.sig.clone();
        let block = &func.block;
        return match kind {
            Kind::Main => {
                sig.ident = syn::Ident::new("__runner_main_with_parameters", sig.ident.span());
                quote! {
                    #[allow(dead_code)]
                    #(#attrs)* #vis #sig #block
                    fn main() {}
                }
            }
            Kind::Test => quote! {
                #[allow(dead_code)]
                #(#attrs)* #vis #sig #block
            },
        };
    }

    let crate_path = &config.crate_path;
    let debug = match (kind, config.debug) {
        (_, Some(debug)) => Some(debug),
        (Kind::Test, None) => Some(true), // R9.2: tests run in debug mode unless told otherwise
        (Kind::Main, None) => None,       // R7.1: main follows RUNNER_DEBUG
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

    func.sig.asyncness = None;
    let output = match &func.sig.output {
        ReturnType::Default => quote!(()),
        ReturnType::Type(_, ty) => ty.to_token_stream(),
    };
    let block = &func.block;
    // The body keeps the user's spans. Binding its value to a local of the declared type makes a
    // type error point at the offending expression in the user's code (not at the whole body, as a
    // cast to `dyn Future<Output = T>` would), and lets `?` infer a `Result` body's error type.
    // A body that diverges (ends in `panic!`) makes that trailing `output` unreachable: the lint is
    // allowed for our code and switched back on for the user's block (and the binding's leading
    // underscore keeps it from being reported as unused).
    let body = quote_spanned! {block.span()=>
        #[allow(unreachable_code)]
        let body = async {
            #[warn(unreachable_code)]
            #[allow(clippy::diverging_sub_expression)]
            let __runner_output: #output = #block;
            __runner_output
        };
    };
    let timeout = config.timeout.as_ref().map(|(ms, text)| {
        quote! {
            let body = #crate_path::__private::test_timeout(#ms, #text, body);
        }
    });
    let on_error = match kind {
        Kind::Main => quote!(error.exit()),
        Kind::Test => quote!(::core::panic!(
            "#[runner::test] could not run the test: {}",
            error
        )),
    };
    let test_attribute = match kind {
        Kind::Test if !shape.second_test_attribute => quote!(#[::core::prelude::v1::test]),
        _ => quote!(),
    };
    let attrs = &func.attrs;
    let vis = &func.vis;
    let sig = &func.sig;
    quote! {
        #(#attrs)*
        #test_attribute
        #vis #sig {
            #body
            #timeout
            match #builder.run(body) {
                ::core::result::Result::Ok(value) => value,
                ::core::result::Result::Err(error) => #on_error,
            }
        }
    }
}
