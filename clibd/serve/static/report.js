// The run report: a click on a map point shows that specimen (its hover title and its photo).
"use strict";
document.querySelectorAll("svg.map circle[data-row]").forEach((dot) => {
  dot.addEventListener("click", () => {
    const box = document.getElementById("specimen");
    const img = document.createElement("img");
    img.src = `/run/specimen/${dot.dataset.row}`;
    img.alt = "specimen photo";
    img.onerror = () => { img.replaceWith(document.createTextNode("(no photo for this specimen)")); };
    const text = document.createElement("p");
    text.textContent = dot.querySelector("title").textContent;
    box.replaceChildren(text, img);
    document.querySelectorAll("svg.map circle.picked").forEach((c) => c.classList.remove("picked"));
    dot.classList.add("picked");
  });
});
